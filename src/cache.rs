//! A small map whose entries are forgotten after a fixed time: what a
//! process keeps of rows another process may change (a tenant's time zone,
//! an API key), so a hot path need not read them on every request.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Entries kept at most; past it the map starts again empty (a burst of
/// distinct keys costs reads, never memory).
const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<V> {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    #[must_use]
    pub fn new(ttl: Duration) -> TtlCache<V> {
        TtlCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The value, if it was put less than the time-to-live ago.
    pub fn get(&self, key: &str) -> Option<V> {
        self.entries
            .read()
            .ok()?
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    pub fn put(&self, key: &str, value: V) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key.to_owned(), (Instant::now(), value));
        }
    }

    /// Forgets one key (this process changed what it stands for).
    pub fn forget(&self, key: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_for_its_time_to_live() {
        let cache = TtlCache::new(Duration::from_millis(50));
        assert_eq!(cache.get("a"), None);
        cache.put("a", 1);
        assert_eq!(cache.get("a"), Some(1));
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
        cache.put("a", 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_full_cache_starts_again() {
        let cache = TtlCache::new(Duration::from_secs(60));
        for i in 0..MAX_ENTRIES {
            cache.put(&i.to_string(), i);
        }
        assert_eq!(cache.get("0"), Some(0));
        cache.put("one more", 1);
        assert_eq!(cache.get("0"), None);
        assert_eq!(cache.get("one more"), Some(1));
    }
}
