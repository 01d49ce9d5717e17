//! Progress of `send` on stderr: a line redrawn in place on a terminal, plain lines
//! every few seconds otherwise (logs, CI), and the summary at the end.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use tokio::time::Instant;

/// A plain line this often when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// What has happened so far, in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub events: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Input bytes read (from the inputs' start; `bytes_at_start` of them by earlier
    /// runs of a resumed job) and the inputs' total size, when known.
    pub bytes: u64,
    pub bytes_at_start: u64,
    pub total_bytes: Option<u64>,
}

pub struct Progress {
    started: Instant,
    terminal: bool,
    last_plain: Instant,
    drawn: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(std::io::stderr().is_terminal())
    }
}

impl Progress {
    pub fn new(terminal: bool) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            terminal,
            last_plain: now,
            drawn: false,
        }
    }

    /// How often [`Progress::show`] is worth calling.
    pub fn tick(&self) -> Duration {
        if self.terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn show(&mut self, snapshot: &Snapshot) {
        let line = line(snapshot, self.started.elapsed());
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            eprintln!("progress: {line}");
        }
    }

    /// A message on a line of its own (the progress line is redrawn after it).
    pub fn note(&mut self, message: &str) {
        self.clear();
        eprintln!("{message}");
    }

    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// `1234 events, 410/s, 57 % of input, ETA 1m02s; delivered 1200, failed 34`
pub fn line(snapshot: &Snapshot, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let mut text = format!(
        "{} events, {:.0}/s",
        snapshot.events,
        snapshot.events as f64 / seconds
    );
    if let Some(total) = snapshot.total_bytes.filter(|t| *t > 0) {
        let fraction = (snapshot.bytes as f64 / total as f64).min(1.0);
        text.push_str(&format!(", {:.0} % of input", fraction * 100.0));
        let this_run = snapshot.bytes.saturating_sub(snapshot.bytes_at_start);
        if this_run > 0 && fraction < 1.0 {
            let left = seconds * total.saturating_sub(snapshot.bytes) as f64 / this_run as f64;
            text.push_str(&format!(
                ", ETA {}",
                duration(Duration::from_secs_f64(left))
            ));
        }
    }
    text.push_str(&format!(
        "; delivered {}, failed {}",
        snapshot.delivered, snapshot.failed
    ));
    text
}

/// `2h03m`, `1m02s`, `4.2s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_rate_share_and_eta() {
        let snapshot = Snapshot {
            events: 1000,
            delivered: 990,
            failed: 10,
            bytes: 250,
            bytes_at_start: 0,
            total_bytes: Some(1000),
        };
        assert_eq!(
            line(&snapshot, Duration::from_secs(10)),
            "1000 events, 100/s, 25 % of input, ETA 30.0s; delivered 990, failed 10"
        );
        let stdin = Snapshot {
            total_bytes: None,
            ..snapshot
        };
        assert_eq!(
            line(&stdin, Duration::from_secs(10)),
            "1000 events, 100/s; delivered 990, failed 10"
        );
        assert_eq!(duration(Duration::from_secs(7384)), "2h03m");
        assert_eq!(duration(Duration::from_secs(62)), "1m02s");
    }
}
