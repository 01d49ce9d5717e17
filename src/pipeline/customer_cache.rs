//! The customer-id cache: look-up path → Kustomer customer id, per warm container.
//! A repeat identify of a recently seen user goes straight to the update, saving its
//! look-ups (Kustomer's rate limit is shared by every integration of an org).
//! Bounded in size, entries expire after a TTL; the oldest entry goes first when full.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct CustomerCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// lookup path → (encoded customer id, stored at)
    ids: HashMap<String, (String, Instant)>,
    /// Insertion order, for eviction; may hold keys already replaced or removed.
    order: VecDeque<(String, Instant)>,
}

impl CustomerCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        CustomerCache {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached customer id for the first of `paths` that has a live entry.
    pub fn find<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let entries = self.entries();
        let now = Instant::now();
        paths.into_iter().find_map(|path| {
            entries
                .ids
                .get(path)
                .filter(|(_, stored)| now.duration_since(*stored) < self.ttl)
                .map(|(id, _)| id.clone())
        })
    }

    /// Remembers that each of `paths` leads to `customer_id`.
    pub fn remember<'a>(&self, paths: impl IntoIterator<Item = &'a str>, customer_id: &str) {
        let mut entries = self.entries();
        let now = Instant::now();
        for path in paths {
            entries
                .ids
                .insert(path.to_string(), (customer_id.to_string(), now));
            entries.order.push_back((path.to_string(), now));
        }
        while entries.ids.len() > self.capacity {
            let Some((path, stored)) = entries.order.pop_front() else {
                break;
            };
            // Only evict the entry this order slot was written for (not a later rewrite).
            if entries.ids.get(&path).is_some_and(|(_, at)| *at == stored) {
                entries.ids.remove(&path);
            }
        }
        // Keep the order queue from growing without bound through rewrites.
        if entries.order.len() > self.capacity * 4 {
            let Entries { ids, order } = &mut *entries;
            order.retain(|(path, stored)| ids.get(path).is_some_and(|(_, at)| at == stored));
        }
    }

    /// Drops every path pointing at `customer_id` (merged or deleted customer).
    pub fn forget(&self, customer_id: &str) {
        self.entries().ids.retain(|_, (id, _)| id != customer_id);
    }

    pub fn len(&self) -> usize {
        self.entries().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finds_in_order_and_expires() {
        let cache = CustomerCache::new(Duration::from_secs(60), 10);
        cache.remember(["/e", "/u"], "c1");
        cache.remember(["/a"], "c2");
        assert_eq!(cache.find(["/x", "/a", "/e"]).as_deref(), Some("c2"));
        assert_eq!(cache.find(["/e"]).as_deref(), Some("c1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.find(["/e"]), None);
    }

    #[test]
    fn bounded_and_forgets() {
        let cache = CustomerCache::new(Duration::from_secs(60), 3);
        for n in 0..10 {
            cache.remember([format!("/k{n}").as_str()], &format!("c{n}"));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.find(["/k9"]).as_deref(), Some("c9"));
        assert_eq!(cache.find(["/k0"]), None);
        cache.forget("c9");
        assert_eq!(cache.find(["/k9"]), None);
    }
}
