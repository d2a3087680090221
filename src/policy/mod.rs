//! Policy, the phase after classification: the Rego bundle (every `*.rego` and `*.json` file of the policy
//! directory, test files aside) is compiled into a regorus engine, warmed and self-tested at start and on every
//! reload, then evaluated for each request on a per-thread engine with a wall-clock limit. Any error, panic,
//! undefined or malformed result is a denial.

pub mod bundle;
pub mod decisions;
pub mod input;
pub mod reload;
pub mod samples;
pub mod testing;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use bundle::{Bundle, BundleError, EngineChoice};
pub use decisions::{DecisionStats, Decisions};
pub use reload::{Reload, ReloadStats};
pub use worker::evaluate;

/// What the policy decided.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allow: bool,
    /// Human-readable reasons (for a denial they reach the client).
    pub reasons: Vec<String>,
    /// Optional flags such as `break_glass`, recorded but not interpreted by the gate.
    pub flags: serde_json::Map<String, serde_json::Value>,
}

/// Why evaluation failed (the request is then denied).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// regorus returned an error (unknown builtin, time limit, conflict...).
    #[error("evaluation error: {0}")]
    Engine(String),
    /// The entrypoint was undefined for this input.
    #[error("the entrypoint is undefined for this input")]
    Undefined,
    /// The result was not a decision document.
    #[error("the decision is malformed: {0}")]
    Malformed(String),
    /// Evaluation panicked.
    #[error("evaluation panicked")]
    Panicked,
}

/// The policy in force: the current bundle behind an atomic swap, and (once started) its reloader.
pub struct Policy {
    slot: Arc<reload::Slot>,
    reloader: Option<tokio::task::AbortHandle>,
    decisions: Option<Decisions>,
    uncacheable: AtomicU64,
}

pub use crate::config::DEFAULT_DECISION_CACHE_ENTRIES;

impl Policy {
    /// Wraps a loaded, self-tested bundle. Reloads read the bundle's own directory, entrypoint and time limit.
    /// Decisions are cached ([`DEFAULT_DECISION_CACHE_ENTRIES`]; see [`Policy::with_decision_cache`]).
    pub fn new(bundle: Bundle) -> Policy {
        Policy {
            slot: Arc::new(reload::Slot::new(bundle)),
            reloader: None,
            decisions: Some(Decisions::new(DEFAULT_DECISION_CACHE_ENTRIES)),
            uncacheable: AtomicU64::new(0),
        }
    }

    /// Caches at most `entries` decisions (`decisions`); zero turns the cache off (every request is evaluated).
    pub fn with_decision_cache(mut self, entries: u64) -> Policy {
        self.decisions = (entries > 0).then(|| Decisions::new(entries));
        self
    }

    /// Starts the background reloader (inside a tokio runtime): polls the directory every `interval` (zero: no
    /// polling) and reloads on SIGHUP. It stops when the policy is dropped, that is with the server.
    pub fn start_reloader(&mut self, interval: Duration) {
        if let Some(previous) = self.reloader.replace(reload::spawn(self.slot.clone(), interval)) {
            previous.abort();
        }
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.slot.bundle()
    }

    /// Evaluates the bundle in force for one input document. The request keeps that bundle for the whole
    /// evaluation, whatever a concurrent reload swaps in.
    pub fn evaluate(&self, input: regorus::Value) -> Result<Decision, EvalError> {
        evaluate(&self.slot.current(), input)
    }

    /// The decision for one request: from the decision cache when the same input document was decided under the
    /// bundle in force (and the bundle is pure, `Bundle::impure_builtin`), else the document is built and evaluated
    /// (and the decision cached). Errors are never cached.
    pub fn decide(
        &self,
        principal: &crate::auth::Principal,
        operation: &crate::mlflow::routes::Operation,
        request: &input::RequestFacts<'_>,
        resource: &serde_json::Value,
    ) -> Result<Arc<Decision>, EvalError> {
        let bundle = self.slot.current();
        // The document shows only the claims the bundle declares; it is built (and the principal narrowed) only when
        // the decision is not cached.
        let evaluate_now = || {
            let principal = bundle.principal_view(principal);
            evaluate(&bundle, input::build_rego(&principal, operation, request, resource))
        };
        let Some(cache) = self.decisions.as_ref().filter(|_| bundle.impure_builtin().is_none()) else {
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
            return evaluate_now().map(Arc::new);
        };
        let (key, generation) = (cache.key(), bundle.generation());
        let digest = input::digest(key, generation, bundle.claims(), principal, operation, request, resource);
        if let Some(decision) = cache.get(digest) {
            return Ok(decision);
        }
        let decision = Arc::new(evaluate_now()?);
        cache.insert(digest, decision.clone());
        Ok(decision)
    }

    /// The decision cache's counters.
    pub fn decision_stats(&self) -> DecisionStats {
        let (hits, misses) = self.decisions.as_ref().map(Decisions::stats).unwrap_or_default();
        DecisionStats { hits, misses, uncacheable: self.uncacheable.load(Ordering::Relaxed) }
    }

    /// Reloads now if the files changed: loads, compiles and self-tests the bundle, then swaps it in. On failure the
    /// bundle in force stays, and the failure is logged and counted. Blocks while compiling.
    pub fn reload_now(&self) -> Result<Reload, BundleError> {
        self.slot.reload("reload_now")
    }

    /// Reload counters and the revision in force.
    pub fn stats(&self) -> ReloadStats {
        self.slot.stats()
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        if let Some(reloader) = self.reloader.take() {
            reloader.abort();
        }
    }
}

/// Reads a decision document: `{"allow": true|false, "reasons": [...], ...flags}`. `allow` must be a boolean;
/// `reasons` may be a list or a set of strings. Any other key is a flag.
pub fn decision_from_value(value: regorus::Value) -> Result<Decision, EvalError> {
    use regorus::Value as V;
    let malformed = |m: String| EvalError::Malformed(m);
    let obj = match &value {
        V::Undefined => return Err(EvalError::Undefined),
        V::Object(obj) => obj,
        _ => return Err(malformed("expected an object with a boolean \"allow\"".into())),
    };
    let (mut allow, mut reasons, mut flags) = (None, Vec::new(), serde_json::Map::new());
    for (key, v) in obj.iter() {
        let V::String(key) = key else { return Err(malformed(format!("a key is not a string: {key}"))) };
        match (key.as_ref(), v) {
            ("allow", V::Bool(b)) => allow = Some(*b),
            ("allow", other) => return Err(malformed(format!("\"allow\" must be a boolean, got {other}"))),
            ("reasons", V::Null) => {}
            ("reasons", V::Array(_) | V::Set(_)) => {
                let items: Box<dyn Iterator<Item = &V>> = match v {
                    V::Array(a) => Box::new(a.iter()),
                    V::Set(s) => Box::new(s.iter()),
                    _ => Box::new(std::iter::empty()),
                };
                for r in items {
                    match r {
                        V::String(s) => reasons.push(s.to_string()),
                        other => return Err(malformed(format!("a reason is not a string: {other}"))),
                    }
                }
            }
            ("reasons", other) => return Err(malformed(format!("\"reasons\" must be a list, got {other}"))),
            (flag, v) => {
                let v = serde_json::to_value(v).map_err(|e| malformed(format!("{flag} is not JSON: {e}")))?;
                flags.insert(flag.to_string(), v);
            }
        }
    }
    let allow = allow.ok_or_else(|| malformed("\"allow\" must be a boolean, got nothing".into()))?;
    Ok(Decision { allow, reasons, flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(json: &str) -> Result<Decision, EvalError> {
        let v = regorus::Value::from_json_str(json).map_err(|e| EvalError::Engine(e.to_string()))?;
        decision_from_value(v)
    }

    #[test]
    fn decision_documents_are_read_strictly() {
        let d = decide(r#"{"allow": false, "reasons": ["no"], "break_glass": true}"#).ok();
        assert_eq!(d.as_ref().map(|d| d.allow), Some(false));
        assert_eq!(d.as_ref().map(|d| d.reasons.clone()), Some(vec!["no".to_string()]));
        assert_eq!(d.and_then(|d| d.flags.get("break_glass").cloned()), Some(serde_json::json!(true)));
        assert!(decide(r#"{"allow": "true"}"#).is_err());
        assert!(decide(r#"{"reasons": []}"#).is_err());
        assert!(decide("true").is_err());
        assert!(decision_from_value(regorus::Value::Undefined).is_err());
        assert!(decide(r#"{"allow": true, "reasons": [1]}"#).is_err());
        assert!(decide(r#"{"allow": true, "reasons": "no"}"#).is_err());
        let d = decide(r#"{"allow": true, "reasons": null, "would_deny": ["a: b"]}"#).ok();
        assert_eq!(d.as_ref().map(|d| d.reasons.len()), Some(0));
        assert_eq!(d.and_then(|d| d.flags.get("would_deny").cloned()), Some(serde_json::json!(["a: b"])));
    }
}
