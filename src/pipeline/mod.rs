//! Scheduling a door's events: each user's events in order, users concurrently through
//! a bounded set of workers, retries inside the deadline, pacing on Kustomer's rate
//! limits, the customer-id cache. Every event ends as one [`crate::outcome::Report`].
//!
//! - `schedule`: [`Pipeline`]: user chains, workers, retries, key reloads, the deadline
//! - `retry`: how long to wait before the next attempt
//! - `pacing`: Kustomer's rate-limit budget, shared by every request of the container
//! - `customer_cache`: customer ids of recently seen users (saves identify look-ups)
//! - `skip`: requests not worth sending (unchanged updates, repeated events)
//! - `ttl_map`: the bounded, expiring map under the caches
//! - `attempt`: one attempt at one event over the Kustomer client

pub mod attempt;
pub mod customer_cache;
pub mod pacing;
pub mod retry;
mod schedule;
pub mod skip;
pub mod ttl_map;

pub use schedule::{user_of, Pipeline};
