//! The figures of one run, computed from the stub's ledger (what Kustomer accepted, in the
//! order it answered), the queue (dead letters, what is left) and the workload (what was
//! sent), and the table that shows runs side by side.
//!
//! Definitions:
//! - **Delivered**: a tracking event when a 2xx tracking write carries its (user,
//!   `fleetSeq`); an identify when a 2xx customer write (create or update) carries its
//!   (user, version). Identical repeated identifies share their version: the customer holds
//!   their content as soon as one of them is written, which is all Kustomer can show.
//! - **Lost**: neither delivered nor (any copy of its message) in the dead-letter list at
//!   the end. Events still queued when the run timed out are lost.
//! - **Duplicate customers**: users with more than one customer created (two creates with
//!   one externalId or one e-mail); "extra customers" counts the creates beyond the first.
//! - **Duplicate companies** (issue 16): company externalIds with more than one company
//!   created. **Customers not linked**: users with a company whose last customer write
//!   does not carry the id that company's look-ups find.
//! - **Order violations**, per user, in the order the stub answered: a tracking event whose
//!   first delivery has a lower `fleetSeq` than one already delivered for that user; a
//!   customer write (create or update) with a lower version than one already written for
//!   that user (the customer goes back to older traits).
//! - **Delivered twice**: tracking events with more than one 2xx write, split into those
//!   whose message was enqueued twice (SQS's duplicates) and the others.
//! - **Requests per event**: every request the stub received except 429s and injected 503s,
//!   divided by the number of events (copies not counted).
//! - **429 share**: 429s divided by every request received.
//! - **Backlog**: from the stub's start (just before the processes start; every message is
//!   enqueued by then) until at most processes × BatchSize messages are left in the queue
//!   (visible, in flight or waiting out a visibility timeout).
//! - **Budget use**: for each budget window that lies wholly inside the backlog, the useful
//!   writes answered in it divided by the budget; the mean over those windows (none when
//!   the backlog is shorter than a window). A useful write is a 2xx write that delivers an
//!   event's content for the first time: neither look-ups, nor repeats of a version
//!   already written, nor second deliveries, nor failed writes count.
//! - **Budget used** (added with issue 18's product work, beside budget use, which it does
//!   not change): for the same windows, every request Kustomer counted (not 429s) divided
//!   by the budget: whether the fleet used the budget at all, whatever it spent it on. The
//!   breakdown splits each such window's requests into useful writes, look-ups, injected
//!   503s and other writes (repeats of a version, second deliveries, failed writes): what
//!   keeps budget use below budget used.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::kustomer::{Ledger, WriteKind};
use super::queue::QueueReport;
use super::runtime::RuntimeStats;
use super::workload::{Content, Workload};

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub events: usize,
    pub messages: usize,
    pub delivered: usize,
    pub lost: usize,
    pub dead_lettered: usize,
    /// Still in the queue at the end (the run timed out).
    pub left_in_queue: usize,
    pub duplicate_customers: usize,
    pub extra_customers: usize,
    pub duplicate_companies: usize,
    pub companies_created: usize,
    pub company_conflicts: u64,
    pub not_linked: usize,
    pub order_violations_tracking: usize,
    pub order_violations_identify: usize,
    pub repeated_tracking: usize,
    pub twice_repeated: usize,
    pub twice_other: usize,
    pub requests: u64,
    pub throttled: u64,
    pub injected_503: u64,
    pub lookups: u64,
    pub requests_per_event: f64,
    pub throttled_share: f64,
    pub backlog: Option<Duration>,
    /// Useful writes in each budget window wholly inside the backlog.
    pub useful_per_window: Vec<usize>,
    /// Those windows' requests: (answered, look-ups, injected 503s).
    pub counted_per_window: Vec<(u32, u32, u32)>,
    pub budget_used: Option<f64>,
    pub budget: u32,
    pub budget_use: Option<f64>,
    /// Requests answered (not 429) in each window, and when the budget ran out in it.
    pub used_per_window: Vec<(u32, Option<Duration>)>,
    pub wall: Duration,
    pub timed_out: bool,
    pub runtime: RuntimeStats,
    pub redeliveries: usize,
    pub process_exits: usize,
    pub unexpected_requests: usize,
    /// The first order violations and duplicate customers, described, for failure messages.
    pub violation_samples: Vec<String>,
    pub duplicate_samples: Vec<String>,
}

impl Figures {
    pub fn order_violations(&self) -> usize {
        self.order_violations_tracking + self.order_violations_identify
    }
}

pub struct RunRecord<'a> {
    pub workload: &'a Workload,
    pub ledger: &'a Ledger,
    pub queue: &'a QueueReport,
    pub runtime: RuntimeStats,
    /// The backlog's end, measured from the stub's start.
    pub backlog: Option<Duration>,
    pub budget: u32,
    pub window: Duration,
    pub wall: Duration,
    pub timed_out: bool,
    pub process_exits: usize,
}

type Key = (String, Content);

pub fn compute(run: &RunRecord<'_>) -> Figures {
    let workload = run.workload;
    let ledger = run.ledger;

    // Order, delivered twice, useful writes: one walk over the writes in answer order.
    let mut deliveries: HashMap<Key, usize> = HashMap::new();
    let mut max_seq: HashMap<&str, u64> = HashMap::new();
    let mut max_version: HashMap<&str, u64> = HashMap::new();
    let mut creates: HashMap<&str, usize> = HashMap::new();
    let mut creates_by_email: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut create_count_by_email: HashMap<&str, usize> = HashMap::new();
    let mut figures = Figures::default();
    let windows = match run.backlog {
        Some(backlog) => (backlog.as_secs_f64() / run.window.as_secs_f64()) as usize,
        None => 0,
    };
    let mut useful = vec![0usize; windows];
    for write in &ledger.writes {
        let Some(key) = write.key else { continue };
        let user = write.user.as_str();
        let content = match write.kind {
            WriteKind::Tracking => Content::Track { seq: key },
            WriteKind::Create | WriteKind::Update => Content::Identify { version: key },
        };
        let count = deliveries.entry((write.user.clone(), content)).or_default();
        *count += 1;
        let first = *count == 1;
        match content {
            Content::Track { seq } => {
                let max = max_seq.entry(user).or_insert(0);
                if first && seq < *max {
                    figures.order_violations_tracking += 1;
                    sample(&mut figures.violation_samples, || {
                        format!("{user}: tracking fleetSeq {seq} first delivered at {:.2} s, after fleetSeq {max}", write.at.as_secs_f64())
                    });
                }
                *max = (*max).max(seq);
            }
            Content::Identify { version } => {
                let max = max_version.entry(user).or_insert(0);
                if version < *max {
                    figures.order_violations_identify += 1;
                    sample(&mut figures.violation_samples, || {
                        format!("{user}: customer written with version {version} at {:.2} s, after version {max}", write.at.as_secs_f64())
                    });
                }
                *max = (*max).max(version);
            }
        }
        if write.kind == WriteKind::Create {
            *creates.entry(user).or_default() += 1;
            if let Some(email) = &write.email {
                creates_by_email.entry(email).or_default().insert(user);
                *create_count_by_email.entry(email).or_default() += 1;
            }
        }
        let window = (write.at.as_secs_f64() / run.window.as_secs_f64()) as usize;
        if first && window < windows {
            useful[window] += 1;
        }
    }

    // Events: delivered, dead-lettered, lost; repeats delivered twice.
    let dead_ids: HashSet<String> = run
        .queue
        .dead
        .iter()
        .filter_map(|dead| message_id(&dead.body))
        .collect();
    for (index, event) in workload.events.iter().enumerate() {
        let times = deliveries
            .get(&(event.user.clone(), event.content))
            .copied()
            .unwrap_or(0);
        if times > 0 {
            figures.delivered += 1;
        } else if dead_ids.contains(&event.message_id) {
            figures.dead_lettered += 1;
        } else {
            figures.lost += 1;
        }
        if let Content::Track { .. } = event.content {
            let repeated = workload.repeated.contains(&index);
            figures.repeated_tracking += usize::from(repeated);
            if times > 1 && repeated {
                figures.twice_repeated += 1;
            } else if times > 1 {
                figures.twice_other += 1;
            }
        }
    }

    let mut duplicated: HashSet<&str> = creates
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(user, _)| *user)
        .collect();
    for (email, users) in &creates_by_email {
        if create_count_by_email[email] > 1 {
            duplicated.extend(users.iter().copied());
        }
    }
    for user in &duplicated {
        let times: Vec<String> = ledger
            .writes
            .iter()
            .filter(|w| w.kind == WriteKind::Create && w.user == *user)
            .map(|w| format!("{:.2} s", w.at.as_secs_f64()))
            .collect();
        sample(&mut figures.duplicate_samples, || {
            format!("{user}: customers created at {}", times.join(", "))
        });
    }
    figures.duplicate_customers = duplicated.len();
    figures.extra_customers = creates.values().map(|n| n - 1).sum();

    let mut creates_by_company: HashMap<&str, usize> = HashMap::new();
    for create in &ledger.company_creates {
        if let Some(id) = &create.external_id {
            *creates_by_company.entry(id).or_default() += 1;
        }
    }
    figures.companies_created = ledger.company_creates.len();
    figures.company_conflicts = ledger.company_conflicts;
    figures.duplicate_companies = creates_by_company.values().filter(|n| **n > 1).count();
    for (company, _) in creates_by_company.iter().filter(|(_, n)| **n > 1) {
        let times: Vec<String> = (ledger.company_creates.iter())
            .filter(|c| c.external_id.as_deref() == Some(*company))
            .map(|c| format!("{:.2} s", c.at.as_secs_f64()))
            .collect();
        sample(&mut figures.duplicate_samples, || {
            format!("company {company}: created at {}", times.join(", "))
        });
    }
    let mut last_link: HashMap<&str, Option<&str>> = HashMap::new();
    for write in &ledger.writes {
        if matches!(write.kind, WriteKind::Create | WriteKind::Update) {
            last_link.insert(&write.user, write.company.as_deref());
        }
    }
    let companies: HashMap<&str, &str> = (workload.events.iter())
        .filter_map(|e| Some((e.user.as_str(), e.company.as_deref()?)))
        .collect();
    figures.not_linked = companies
        .iter()
        .filter(|(user, company)| {
            let expected = ledger.company_of(company);
            expected.is_none() || last_link.get(*user).copied().flatten() != expected
        })
        .count();

    figures.events = workload.events.len();
    figures.messages = workload.messages.len();
    figures.left_in_queue = run.queue.remaining.len();
    figures.requests = ledger.requests;
    figures.throttled = ledger.throttled;
    figures.injected_503 = ledger.injected_503;
    figures.lookups = ledger.lookups;
    let counted = ledger.requests - ledger.throttled - ledger.injected_503;
    figures.requests_per_event = counted as f64 / figures.events.max(1) as f64;
    figures.throttled_share = ledger.throttled as f64 / ledger.requests.max(1) as f64;
    figures.backlog = run.backlog;
    figures.budget = run.budget;
    figures.budget_use = (!useful.is_empty()).then(|| {
        useful.iter().sum::<usize>() as f64 / (useful.len() as f64 * f64::from(run.budget))
    });
    figures.counted_per_window = (0..useful.len())
        .map(|w| {
            let at = |v: &Vec<u32>| v.get(w).copied().unwrap_or(0);
            (
                at(&ledger.used_per_window),
                at(&ledger.lookups_per_window),
                at(&ledger.injected_per_window),
            )
        })
        .collect();
    figures.budget_used = (!useful.is_empty()).then(|| {
        let answered: u32 = figures.counted_per_window.iter().map(|c| c.0).sum();
        f64::from(answered) / (useful.len() as f64 * f64::from(run.budget))
    });
    figures.useful_per_window = useful;
    figures.used_per_window = ledger
        .used_per_window
        .iter()
        .zip(&ledger.spent_at)
        .map(|(used, spent)| (*used, *spent))
        .collect();
    figures.wall = run.wall;
    figures.timed_out = run.timed_out;
    figures.runtime = run.runtime.clone();
    figures.redeliveries = run.queue.redeliveries;
    figures.process_exits = run.process_exits;
    figures.unexpected_requests = ledger.unexpected.len();
    figures
}

fn sample(samples: &mut Vec<String>, describe: impl FnOnce() -> String) {
    if samples.len() < 10 {
        samples.push(describe());
    }
}

fn message_id(body: &str) -> Option<String> {
    let event: Value = serde_json::from_str(body).ok()?;
    Some(event.get("messageId")?.as_str()?.to_string())
}

fn percent(value: f64) -> String {
    format!("{:.1} %", value * 100.0)
}

/// The runs side by side, one column each.
pub fn table(runs: &[(&str, &Figures)]) -> String {
    type Row = (&'static str, fn(&Figures) -> String);
    let rows: Vec<Row> = vec![
        ("events (messages incl. repeats)", |f| {
            format!("{} ({})", f.events, f.messages)
        }),
        ("delivered", |f| f.delivered.to_string()),
        ("events lost", |f| f.lost.to_string()),
        ("in the dead-letter list", |f| f.dead_lettered.to_string()),
        ("left in the queue (timeout)", |f| {
            f.left_in_queue.to_string()
        }),
        ("duplicate customers (users; extra creates)", |f| {
            format!("{} ({})", f.duplicate_customers, f.extra_customers)
        }),
        ("companies created (duplicates; 409s) / not linked", |f| {
            format!(
                "{} ({}; {}) / {}",
                f.companies_created, f.duplicate_companies, f.company_conflicts, f.not_linked
            )
        }),
        ("order violations: tracking / identify", |f| {
            format!(
                "{} / {}",
                f.order_violations_tracking, f.order_violations_identify
            )
        }),
        ("tracking delivered twice: repeated msgs / others", |f| {
            format!(
                "{} of {} / {}",
                f.twice_repeated, f.repeated_tracking, f.twice_other
            )
        }),
        ("Kustomer requests (all)", |f| f.requests.to_string()),
        ("  of which 429 / injected 503 / look-ups", |f| {
            format!("{} / {} / {}", f.throttled, f.injected_503, f.lookups)
        }),
        ("requests per event (no 429, no injected 503)", |f| {
            format!("{:.3}", f.requests_per_event)
        }),
        ("429s, share of requests", |f| percent(f.throttled_share)),
        ("backlog (s)", |f| {
            f.backlog
                .map_or("-".into(), |b| format!("{:.1}", b.as_secs_f64()))
        }),
        ("budget use (useful writes per full window)", |f| {
            match f.budget_use {
                Some(use_) => format!(
                    "{} ({:?} of {})",
                    percent(use_),
                    f.useful_per_window,
                    f.budget
                ),
                None => "- (no full window)".into(),
            }
        }),
        (
            "budget used (requests counted per full window)",
            |f| match f.budget_used {
                Some(used) => percent(used),
                None => "- (no full window)".into(),
            },
        ),
        ("  full windows: useful / look-ups / 503 / other", |f| {
            let cells: Vec<String> = f
                .counted_per_window
                .iter()
                .zip(&f.useful_per_window)
                .map(|((answered, lookups, injected), useful)| {
                    let other = (*answered as usize)
                        .saturating_sub(*useful + *lookups as usize + *injected as usize);
                    format!("{useful} / {lookups} / {injected} / {other}")
                })
                .collect();
            cells.join("; ")
        }),
        ("requests answered per window (budget spent at s)", |f| {
            let cells: Vec<String> = f
                .used_per_window
                .iter()
                .map(|(used, spent)| match spent {
                    Some(at) => format!("{used} ({:.0})", at.as_secs_f64()),
                    None => used.to_string(),
                })
                .collect();
            cells.join(", ")
        }),
        ("invocations / batch item failures", |f| {
            format!(
                "{} / {}",
                f.runtime.invocations, f.runtime.batch_item_failures
            )
        }),
        ("invocation errors / rejected answers", |f| {
            format!(
                "{} / {}",
                f.runtime.invocation_errors, f.runtime.rejected_answers
            )
        }),
        ("redeliveries (receives after the first)", |f| {
            f.redeliveries.to_string()
        }),
        ("process exits / unexpected requests", |f| {
            format!("{} / {}", f.process_exits, f.unexpected_requests)
        }),
        ("wall time (s)", |f| {
            format!(
                "{:.1}{}",
                f.wall.as_secs_f64(),
                if f.timed_out { " (timed out)" } else { "" }
            )
        }),
    ];
    let widths: Vec<usize> = runs
        .iter()
        .map(|(name, figures)| {
            rows.iter()
                .map(|(_, cell)| cell(figures).len())
                .chain([name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = format!("| {:label_width$} |", "figure");
    for ((name, _), width) in runs.iter().zip(&widths) {
        out.push_str(&format!(" {name:width$} |"));
    }
    out.push_str(&format!("\n|{}|", "-".repeat(label_width + 2)));
    for width in &widths {
        out.push_str(&format!("{}|", "-".repeat(width + 2)));
    }
    for (label, cell) in &rows {
        out.push_str(&format!("\n| {label:label_width$} |"));
        for ((_, figures), width) in runs.iter().zip(&widths) {
            out.push_str(&format!(" {:width$} |", cell(figures)));
        }
    }
    out
}
