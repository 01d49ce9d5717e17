//! The customer-id cache: look-up path → Kustomer customer id, per warm container.
//! A repeat identify of a recently seen user goes straight to the update, saving its
//! look-ups (Kustomer's rate limit is shared by every integration of an org).
//! Bounded in size, entries expire after a TTL; the oldest entry goes first when full
//! ([`TtlMap`]).

use std::time::Duration;

use super::ttl_map::TtlMap;

#[derive(Debug)]
pub struct CustomerCache {
    /// look-up path → encoded customer id
    ids: TtlMap<String, String>,
}

impl CustomerCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        CustomerCache {
            ids: TtlMap::new(ttl, capacity),
        }
    }

    /// The cached customer id for the first of `paths` that has a live entry.
    pub fn find<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
        self.ids.find(paths)
    }

    /// Remembers that each of `paths` leads to `customer_id`.
    pub fn remember<'a>(&self, paths: impl IntoIterator<Item = &'a str>, customer_id: &str) {
        let paths = paths.into_iter().map(str::to_string);
        self.ids.insert_all(paths, customer_id.to_string());
    }

    /// Drops every path pointing at `customer_id` (merged or deleted customer).
    pub fn forget(&self, customer_id: &str) {
        self.ids.retain(|_, id| id != customer_id);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
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
