//! The gauges behind `/metrics` (`muhurat_rollouts{state}`,
//! `muhurat_store_up`), kept in memory so that a scrape never touches the
//! store: `/metrics` answers without a token, and a scraper loop must not
//! become database load.
//!
//! The one decision to know: the gauge keeps each rollout's **state by id**,
//! not a count per state. The controller sets a rollout's state after every
//! commit that changed it (an overwrite, so applying it twice is harmless),
//! and the start-up load from the store only fills in ids not already set —
//! so a commit that lands while the load runs is neither lost nor counted
//! twice, whichever finishes first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct Gauges {
    states: Mutex<HashMap<String, String>>,
    /// The controller's latest pass reached the store.
    store_up: AtomicBool,
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges {
            states: Mutex::new(HashMap::new()),
            store_up: AtomicBool::new(true),
        }
    }
}

impl Gauges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A committed state of one rollout (newer than anything loaded).
    pub fn set(&self, id: &str, state: &str) {
        let mut m = self.lock();
        match m.get_mut(id) {
            Some(s) if s == state => {}
            Some(s) => *s = state.to_string(),
            None => {
                m.insert(id.to_string(), state.to_string());
            }
        }
    }

    /// States read from the store: only ids no commit has set yet.
    pub fn load(&self, states: impl IntoIterator<Item = (String, String)>) {
        let mut m = self.lock();
        for (id, state) in states {
            m.entry(id).or_insert(state);
        }
    }

    /// Rollouts per state.
    pub fn by_state(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in self.lock().values() {
            *out.entry(s.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn set_store_up(&self, up: bool) {
        self.store_up.store(up, Ordering::Relaxed);
    }

    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_during_the_load_is_neither_lost_nor_counted_twice() {
        let g = Gauges::default();
        // Committed (and set) after the load's query read the old state.
        g.set("a", "baking");
        g.load([
            ("a".to_string(), "applying".to_string()),
            ("b".to_string(), "succeeded".to_string()),
        ]);
        // Set twice (a retried report): still one rollout.
        g.set("b", "succeeded");
        let by = g.by_state();
        assert_eq!(by.get("baking"), Some(&1));
        assert_eq!(by.get("applying"), None);
        assert_eq!(by.get("succeeded"), Some(&1));
        assert_eq!(by.values().sum::<u64>(), 2);
    }
}
