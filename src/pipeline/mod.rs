//! Scheduling a door's events: each user's events in order, users concurrently through
//! a bounded set of workers, retries inside the deadline, pacing on Kustomer's rate
//! limits, the customer- and company-id caches. Every event ends as one
//! [`crate::outcome::Report`].
//!
//! - `schedule`: [`Pipeline`]: user chains, workers, retries, key reloads, the deadline
//! - `retry`: how long to wait before the next attempt
//! - `pacing`: Kustomer's rate-limit budget, shared by every request of the container
//! - `id_cache`: customer and company ids recently seen (saves look-ups), single-flight per company
//! - `skip`: requests not worth sending (unchanged updates, repeated events)
//! - `ttl_map`: the bounded, expiring map under the caches
//! - `attempt`: one attempt at one event over the Kustomer client

pub mod attempt;
pub mod id_cache;
pub mod pacing;
pub mod retry;
mod schedule;
pub mod skip;
pub mod ttl_map;

pub use schedule::{user_of, Hooks, OnReport, Pipeline};
