//! Policy, the decision cache: a decision is a function of the input document and the bundle (when the bundle calls
//! no impure builtin, `bundle::IMPURE_BUILTINS`), so a request whose input is the same as an earlier one's, under
//! the same bundle, gets the earlier decision without building the document or running the policy. The UI polls the
//! same reads with the same token; those are answered here in about a microsecond instead of the ten or more that
//! building and evaluating the document take.
//!
//! The key is `input::digest`: a keyed 128-bit hash of every field the document is built from, and of the bundle's
//! generation (a reload starts afresh). The facts in `resource` are part of it, so anything that changes the facts
//! (a grant, an owner, a stage, an approval) changes the key: the cache never decides on older facts than an
//! evaluation would. Only decisions are cached, never errors (an evaluation that fails denies and is tried again on
//! the next request). Bounded in entries; entries of an older bundle age out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Decision;

/// How long an entry lives at most (a bound on memory held for inputs that do not come back, not on staleness: an
/// entry cannot become wrong).
const TIME_TO_IDLE: Duration = Duration::from_secs(300);

/// An entry's weight in entries: one for a decision of up to about 512 bytes of reasons and flags, more for a
/// bigger one (a replaced bundle may return large flags), so `entries` bounds memory as well as count.
fn weight(decision: &Decision) -> u32 {
    let reasons: usize = decision.reasons.iter().map(String::len).sum();
    let flags: usize = decision.flags.iter().map(|(k, v)| k.len() + size(v)).sum();
    u32::try_from(1 + (reasons + flags) / 512).unwrap_or(u32::MAX)
}

/// About how many bytes a JSON value holds (strings and keys by length, every other node 8), without serialising it.
fn size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(items) => items.iter().map(size).sum::<usize>() + 8,
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| k.len() + size(v)).sum::<usize>() + 8,
        _ => 8,
    }
}

/// The cache of one policy (all bundles it swaps in).
pub struct Decisions {
    key: (u64, u64),
    cache: moka::sync::Cache<u128, Arc<Decision>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hits and misses since start, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionStats {
    /// Decisions answered from the cache.
    pub hits: u64,
    /// Decisions evaluated (and cached) because no entry matched.
    pub misses: u64,
    /// Decisions evaluated without looking in the cache: the cache is off, or the bundle calls an impure builtin.
    pub uncacheable: u64,
}

impl Decisions {
    /// A cache of at most `entries` decisions (of weight one, [`weight`]), with a fresh secret hash key.
    pub fn new(entries: u64) -> Decisions {
        Decisions {
            key: (rand::random(), rand::random()),
            cache: moka::sync::Cache::builder()
                .max_capacity(entries)
                .weigher(|_, d: &Arc<Decision>| weight(d))
                .time_to_idle(TIME_TO_IDLE)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The secret key of [`super::input::digest`].
    pub fn key(&self) -> (u64, u64) {
        self.key
    }

    /// The decision cached under `digest`, counted as a hit or a miss.
    pub fn get(&self, digest: u128) -> Option<Arc<Decision>> {
        let found = self.cache.get(&digest);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a decision just evaluated.
    pub fn insert(&self, digest: u128, decision: Arc<Decision>) {
        self.cache.insert(digest, decision);
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_decisions_weigh_more() {
        let small = Decision { allow: true, reasons: vec![], flags: serde_json::Map::new() };
        assert_eq!(weight(&small), 1);
        let mut flags = serde_json::Map::new();
        flags.insert("readable".into(), serde_json::Value::Array((0..1000).map(serde_json::Value::from).collect()));
        let big = Decision { allow: true, reasons: vec!["x".repeat(2048)], flags };
        assert_eq!(weight(&big), 1 + (2048 + 8 + 8 * 1000 + 8) / 512);
    }
}
