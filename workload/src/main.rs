//! `workload`: prints the benchmarks' generated RudderStack events as JSON Lines.
//!
//! ```text
//! workload 10000 > /tmp/w.jsonl                      # mixed: 25 % each type
//! workload 1000 --seed 7                             # another deterministic workload
//! workload 1000 --repeat-users 20                    # identify only, 20 users round-robin
//! ```

use std::io::Write as _;
use std::process::ExitCode;

const USAGE: &str = "usage: workload N [--seed S] [--repeat-users U]";

fn main() -> ExitCode {
    let (n, seed, repeat_users) = match parse() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("workload: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let events = match repeat_users {
        Some(users) => workload::repeat_identify(users, n, seed),
        None => workload::events(n, seed),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for event in &events {
        if writeln!(out, "{event}").is_err() {
            return ExitCode::from(1);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn parse() -> Result<(usize, u64, Option<usize>), String> {
    use lexopt::prelude::*;
    let mut n = None;
    let mut seed = 42u64;
    let mut repeat_users = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("seed") => {
                seed = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            Long("repeat-users") => {
                let users: usize = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .parse()
                    .map_err(|e| format!("--repeat-users: {e}"))?;
                repeat_users = Some(users.max(1));
            }
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(value) if n.is_none() => {
                n = Some(value.parse::<usize>().map_err(|e| format!("N: {e}"))?)
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok((n.ok_or("N is required")?, seed, repeat_users))
}
