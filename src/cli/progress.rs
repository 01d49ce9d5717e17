//! Progress of `send` on stderr: a line redrawn in place on a terminal, plain lines
//! every few seconds otherwise (logs, CI), and the summary at the end.
//!
//! It counts what is finished (delivered, or failed and written to the failures file)
//! against the inputs' size in events, once a first pass has counted them (stdin has no
//! size: no share, no ETA). The ETA divides what is left by the rate of the last
//! [`RATE_WINDOW`], so a slow start or a passing 429 storm moves it only for a while.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use tokio::time::Instant;

/// A plain line this often when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// The rate behind the ETA is measured over this much of the recent past.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How far the job is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Events finished over the whole job: by earlier runs and this one.
    pub done: u64,
    /// Of those, by this run: delivered and failed.
    pub delivered: u64,
    pub failed: u64,
    /// Events in the inputs, once counted.
    pub total: Option<u64>,
}

impl Snapshot {
    fn this_run(&self) -> u64 {
        self.delivered + self.failed
    }
}

pub struct Progress {
    started: Instant,
    terminal: bool,
    last_plain: Instant,
    drawn: bool,
    /// (when, events finished by this run) of the last [`RATE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
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
            samples: VecDeque::from([(now, 0)]),
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
        let now = Instant::now();
        self.samples.push_back((now, snapshot.this_run()));
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let line = line(snapshot, now.duration_since(self.started), self.rate());
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = now;
            eprintln!("progress: {line}");
        }
    }

    /// Events per second over the window; `None` until a second has passed.
    fn rate(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let seconds = last.0.duration_since(first.0).as_secs_f64();
        (seconds >= 1.0).then(|| last.1.saturating_sub(first.1) as f64 / seconds)
    }

    /// A message on a line of its own (the progress line is redrawn after it).
    pub fn note(&mut self, message: &str) {
        self.clear();
        eprintln!("{message}");
    }

    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

/// `1234/3000 events (41 %), 12/s, elapsed 1m40s, ETA 2m24s; delivered 1200, failed 34`.
/// The share is rounded down: 100 % only once every event is finished.
pub fn line(snapshot: &Snapshot, elapsed: Duration, rate: Option<f64>) -> String {
    let mut text = match snapshot.total {
        Some(total) => format!(
            "{}/{total} events ({} %)",
            snapshot.done,
            snapshot.done.min(total) * 100 / total.max(1)
        ),
        None => format!("{} events", snapshot.done),
    };
    if let Some(rate) = rate {
        text.push_str(&format!(", {rate:.1}/s"));
    }
    text.push_str(&format!(", elapsed {}", duration(elapsed)));
    if let (Some(total), Some(rate)) = (snapshot.total, rate) {
        let left = total.saturating_sub(snapshot.done);
        if left > 0 && rate > 0.0 {
            let eta = Duration::try_from_secs_f64(left as f64 / rate).unwrap_or(Duration::MAX);
            text.push_str(&format!(", ETA {}", duration(eta)));
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
    fn lines_show_done_of_total_elapsed_and_eta() {
        let snapshot = Snapshot {
            done: 1000,
            delivered: 590,
            failed: 10,
            total: Some(4000),
        };
        assert_eq!(
            line(&snapshot, Duration::from_secs(100), Some(6.0)),
            "1000/4000 events (25 %), 6.0/s, elapsed 1m40s, ETA 8m20s; delivered 590, failed 10"
        );
        let stdin = Snapshot {
            total: None,
            ..snapshot
        };
        assert_eq!(
            line(&stdin, Duration::from_secs(10), Some(6.0)),
            "1000 events, 6.0/s, elapsed 10.0s; delivered 590, failed 10"
        );
        // One event left: 99 %, never 100 % before the last one.
        let almost = Snapshot {
            done: 3999,
            ..snapshot
        };
        assert!(line(&almost, Duration::from_secs(1), None).starts_with("3999/4000 events (99 %)"));
        assert_eq!(duration(Duration::from_secs(7384)), "2h03m");
        assert_eq!(duration(Duration::from_secs(62)), "1m02s");
    }

    /// The rate is the recent one: a fast start does not hold the ETA down later.
    #[tokio::test(start_paused = true)]
    async fn the_rate_is_measured_over_the_recent_window() {
        let mut progress = Progress::new(false);
        let mut snapshot = Snapshot {
            total: Some(10_000),
            ..Snapshot::default()
        };
        for second in 1..=200u64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // 50/s for 100 s, then 10/s.
            snapshot.delivered += if second <= 100 { 50 } else { 10 };
            snapshot.done = snapshot.delivered;
            progress.show(&snapshot);
        }
        let rate = progress.rate().unwrap();
        assert!((rate - 10.0).abs() < 0.5, "{rate}");
    }
}
