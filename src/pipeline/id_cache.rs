//! The id caches, per warm container: look-up key → Kustomer id. Two of them, built alike
//! and bounded alike (`CUSTOMER_CACHE_TTL_SECONDS`, `CUSTOMER_CACHE_MAX_ENTRIES`):
//! - customer ids, keyed by look-up path: a repeat identify of a recently seen user goes
//!   straight to the update, saving its look-ups;
//! - company ids (spec 12.3 point 6), keyed by externalId or lower-cased name: the users of
//!   one company resolve it once. [`IdCache::single_flight_all`] makes concurrent events of
//!   one company (by externalId or by name) wait for the first to resolve it, instead of all
//!   looking it up (or creating it twice).
//!
//! Kustomer's rate limit is shared by every integration of an org, so every look-up saved
//! counts. Entries expire after a TTL; the oldest entry goes first when full ([`TtlMap`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ttl_map::TtlMap;

/// The customer-id cache (look-up path → customer id).
pub type CustomerCache = IdCache;
/// The company-id cache (`externalId=…` / `name=…` → company id).
pub type CompanyCache = IdCache;

#[derive(Debug)]
pub struct IdCache {
    /// key → id
    ids: TtlMap<String, String>,
    /// Keys being resolved right now, each with the lock its resolver holds.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl IdCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        IdCache {
            ids: TtlMap::new(ttl, capacity),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The cached id for the first of `paths` (keys) that has a live entry.
    pub fn find<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
        self.ids.find(paths)
    }

    /// Remembers that each of `paths` (keys) leads to `customer_id`.
    pub fn remember<'a>(&self, paths: impl IntoIterator<Item = &'a str>, customer_id: &str) {
        let paths = paths.into_iter().map(str::to_string);
        self.ids.insert_all(paths, customer_id.to_string());
    }

    /// Drops every key pointing at `customer_id` (merged or deleted customer or company).
    pub fn forget(&self, customer_id: &str) {
        self.ids.retain(|_, id| id != customer_id);
    }

    /// Waits until no other event is resolving `key`, and holds it until the guard is
    /// dropped: the first event of a company resolves it (look-up, create) while the others
    /// wait, then find its id here. Bounded by the attempt's deadline like any wait.
    pub async fn single_flight(&self, key: &str) -> SingleFlight<'_> {
        let lock = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(in_flight.entry(key.to_string()).or_default())
        };
        let guard = lock.lock_owned().await;
        SingleFlight {
            cache: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// [`Self::single_flight`] over several keys (a company's externalId and name), taken
    /// in sorted order so that two events never wait for each other in a circle.
    pub async fn single_flight_all(&self, keys: &[String]) -> Vec<SingleFlight<'_>> {
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let mut held = Vec::with_capacity(keys.len());
        for key in keys {
            held.push(self.single_flight(key).await);
        }
        held
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held while one event resolves a key ([`IdCache::single_flight`]).
pub struct SingleFlight<'a> {
    cache: &'a IdCache,
    key: String,
    /// Holds the key's lock (and a count of it); `None` once dropped.
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for SingleFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .cache
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Released (and its count given back) while the map is locked: the lock is cloned
        // out of the map only under that lock, so the map's copy alone means that nobody
        // else holds or waits for the key, which is then forgotten.
        drop(self.guard.take());
        if in_flight
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            in_flight.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finds_in_order_and_expires() {
        let cache = IdCache::new(Duration::from_secs(60), 10);
        cache.remember(["/e", "/u"], "c1");
        cache.remember(["/a"], "c2");
        assert_eq!(cache.find(["/x", "/a", "/e"]).as_deref(), Some("c2"));
        assert_eq!(cache.find(["/e"]).as_deref(), Some("c1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.find(["/e"]), None);
    }

    #[test]
    fn bounded_and_forgets() {
        let cache = IdCache::new(Duration::from_secs(60), 3);
        for n in 0..10 {
            cache.remember([format!("/k{n}").as_str()], &format!("c{n}"));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.find(["/k9"]).as_deref(), Some("c9"));
        assert_eq!(cache.find(["/k0"]), None);
        cache.forget("c9");
        assert_eq!(cache.find(["/k9"]), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_flight_serialises_one_key_and_cleans_up() {
        let cache = Arc::new(IdCache::new(Duration::from_secs(60), 10));
        let resolved = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, resolved) = (Arc::clone(&cache), Arc::clone(&resolved));
                tokio::spawn(async move {
                    let _flight = cache.single_flight("externalId=acct_1").await;
                    if cache.find(["externalId=acct_1"]).is_none() {
                        // The "look-up": only the first gets here.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        resolved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        cache.remember(["externalId=acct_1"], "c1");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(resolved.load(std::sync::atomic::Ordering::SeqCst), 1);
        {
            let map = cache.in_flight.lock().unwrap();
            let counts: Vec<usize> = map.values().map(Arc::strong_count).collect();
            assert!(map.is_empty(), "left: {counts:?}");
        }
        // Other keys do not wait for each other.
        let a = cache.single_flight("a").await;
        let b = tokio::time::timeout(Duration::from_secs(1), cache.single_flight("b")).await;
        assert!(b.is_ok());
        drop((a, b));
        assert!(cache.in_flight.lock().unwrap().is_empty());
    }
}
