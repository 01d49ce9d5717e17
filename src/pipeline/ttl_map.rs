//! A map for the per-container caches: entries expire after a TTL, and at most `capacity`
//! live at once (the oldest goes first when full). Thread-safe behind one lock; every
//! operation is O(1) amortised. The customer-id cache and the skip caches are built on it.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct TtlMap<K, V> {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    /// key → (value, stored at, write number)
    map: HashMap<K, (V, Instant, u64)>,
    /// Insertion order, for eviction: (key, write number); may hold keys already
    /// rewritten or removed (their write number no longer matches).
    order: VecDeque<(K, u64)>,
    writes: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlMap<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlMap {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                order: VecDeque::new(),
                writes: 0,
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        // A poisoned lock only means a panic elsewhere; the entries are still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first of `keys` with a live entry, and its value.
    pub fn find<'a, Q>(&self, keys: impl IntoIterator<Item = &'a Q>) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'a,
    {
        let entries = self.entries();
        let now = Instant::now();
        keys.into_iter().find_map(|key| {
            entries
                .map
                .get(key)
                .filter(|(_, stored, _)| now.saturating_duration_since(*stored) < self.ttl)
                .map(|(value, _, _)| value.clone())
        })
    }

    /// The live value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find([key])
    }

    /// Stores `value` under each of `keys`, as of now.
    pub fn insert_all(&self, keys: impl IntoIterator<Item = K>, value: V) {
        let mut entries = self.entries();
        let now = Instant::now();
        for key in keys {
            entries.writes = entries.writes.wrapping_add(1);
            let write = entries.writes;
            entries.map.insert(key.clone(), (value.clone(), now, write));
            entries.order.push_back((key, write));
        }
        let written = |map: &HashMap<K, (V, Instant, u64)>, key: &K, write: u64| {
            map.get(key).is_some_and(|(_, _, number)| *number == write)
        };
        while entries.map.len() > self.capacity {
            let Some((key, write)) = entries.order.pop_front() else {
                break;
            };
            // Only evict the entry this order slot was written for (not a later rewrite).
            if written(&entries.map, &key, write) {
                entries.map.remove(&key);
            }
        }
        // Keep the order queue from growing without bound through rewrites.
        if entries.order.len() > self.capacity.saturating_mul(4) {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(key, write)| written(map, key, *write));
        }
    }

    pub fn insert(&self, key: K, value: V) {
        self.insert_all([key], value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries().map.remove(key);
    }

    /// Keeps only the entries for which `keep` says so.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries()
            .map
            .retain(|key, (value, _, _)| keep(key, value));
    }

    pub fn len(&self) -> usize {
        self.entries().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_and_stays_bounded() {
        let map: TtlMap<String, u32> = TtlMap::new(Duration::from_secs(60), 3);
        for n in 0..10 {
            map.insert(format!("k{n}"), n);
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map.get("k9"), Some(9));
        assert_eq!(map.get("k0"), None);
        assert_eq!(map.find(["k0", "k8", "k9"]), Some(8));
        // Rewrites keep the order queue bounded and do not evict the newer value.
        for _ in 0..100 {
            map.insert("k9".into(), 90);
        }
        assert_eq!(map.get("k9"), Some(90));
        assert!(map.entries().order.len() <= 3 * 4 + 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(map.get("k9"), None);
        map.retain(|_, value| *value != 90);
        assert_eq!(map.len(), 2);
    }
}
