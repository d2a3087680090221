//! Audit, at the end of every request that reached a decision: one JSON record per decision (allowed or denied),
//! in a keyed chain (HMAC-SHA256, see `chain`) that starts at a genesis record, so that `mlflow-gate audit verify`
//! finds records altered, deleted (at the start, in the middle, or at the end given a checkpoint), reordered or
//! written with another key. Records are written by one background thread (the request path only sends them on a
//! channel), to a file with size-based rotation or to stdout, and flushed before the gate exits. The same thread
//! publishes signed checkpoints (every N records, every T seconds, at rotation and at shutdown) to the process log,
//! to a publisher callback (webhooks) and to the admin listener.

mod chain;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use writer::Writer;

pub use chain::{AuditKey, Checkpoint, KeyError, KeySource, GENESIS_PREV, KEY_HINT, MIN_KEY_BYTES};
pub use verify::{replica_of_file, verify, Problem, Summary, Verifier};

/// `[audit]`: where records go, the chain's key, and how often checkpoints are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where records go.
    pub sink: Sink,
    /// Where the HMAC key is read from (at start).
    pub key: KeySource,
    /// A checkpoint after this many records.
    pub checkpoint_every_records: u64,
    /// A checkpoint at least this often while records are written.
    pub checkpoint_interval: Duration,
    /// The replica whose chain this is (`[fleet] replica_id`): in every record and checkpoint, so the chains of a
    /// fleet's replicas can be told apart and verified together.
    pub replica: Option<String>,
}

/// Called with every checkpoint, on the writer's thread (e.g. to emit an `AUDIT_CHECKPOINT` webhook event).
pub type Publish = Box<dyn Fn(&Checkpoint) + Send>;

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output, one line per record.
    Stdout,
    /// A file, rotated when it reaches `max_bytes` (the old file is renamed with a numeric suffix).
    File {
        /// The active file.
        path: PathBuf,
        /// Rotation size.
        max_bytes: u64,
        /// Rotated files kept (older ones are deleted).
        keep: usize,
    },
}

/// The facts of one decision, as the request path knows them.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The request id (also in the response header and error messages).
    pub decision_id: String,
    /// Subject and groups (never the token).
    pub principal: Option<(String, Vec<String>)>,
    /// MLflow RPC.
    pub rpc: String,
    /// Resource type.
    pub resource_type: String,
    /// The target fields the policy saw.
    pub target: Value,
    /// The request's method.
    pub method: String,
    /// The path as the client sent it (raw, not canonicalised; the canonical one is what the policy saw).
    pub path: String,
    /// `allow`, or why the request ended: `denied` (policy or unknown route), `unauthenticated`, `bad_request`,
    /// `invalid_parameter`, `not_found`, `invalid_state`, `too_large`, `body_timeout`, `overloaded`,
    /// `policy_error`, `keys_unavailable`, `lookup_failed`, `upstream_unavailable`, `upstream_timeout`, `internal`
    /// (`GateError::kind`). Public routes are not recorded.
    pub decision: String,
    /// The policy's reasons.
    pub reasons: Vec<String>,
    /// Shadow-mode denials that were not enforced.
    pub would_deny: Vec<String>,
    /// Whether the policy flagged a break-glass action.
    pub break_glass: bool,
    /// Whether an admin changed the files of a registered model version (the policy's `frozen_override` flag).
    pub frozen_override: bool,
    /// The policy bundle's revision.
    pub bundle_revision: String,
    /// Status MLflow answered (when forwarded).
    pub upstream_status: Option<u16>,
    /// Status the client got.
    pub status: u16,
    /// Time spent in the gate and upstream.
    pub latency_ms: f64,
}

pub(crate) enum Msg {
    Record(Box<Entry>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    latest: Arc<Mutex<Option<Checkpoint>>>,
}

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file cannot be opened or continued.
    #[error("audit log {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What failed, and what to do.
        message: String,
    },
    /// The key is missing or unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl AuditLog {
    /// Reads the key, opens the sink (continuing the chain of an existing file, or starting one with a genesis
    /// record), publishes a first checkpoint and starts the writer thread.
    pub fn start(settings: Settings, publish: Publish) -> Result<AuditLog, AuditError> {
        let key = AuditKey::load(&settings.key)?;
        let latest = Arc::new(Mutex::new(None));
        let mut writer = Writer::open(&settings, key, publish, latest.clone())?;
        writer.checkpoint();
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| AuditError::File { path: "(writer thread)".into(), message: e.to_string() })?;
        Ok(AuditLog { tx, latest })
    }

    /// Queues a record (never blocks the request).
    pub fn record(&self, entry: Entry) {
        if self.tx.send(Msg::Record(Box::new(entry))).is_err() {
            tracing::error!("the audit writer has stopped; a record was lost");
        }
    }

    /// Waits until every record queued so far is written and flushed.
    pub async fn flush(&self, within: Duration) {
        self.wait(Msg::Flush, within).await;
    }

    /// At shutdown: writes and flushes every record queued so far, then publishes a final checkpoint.
    pub async fn close(&self, within: Duration) {
        self.wait(Msg::Close, within).await;
    }

    async fn wait(&self, msg: fn(oneshot::Sender<()>) -> Msg, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(msg(done)).is_ok() && tokio::time::timeout(within, wait).await.is_err() {
            tracing::error!("the audit writer did not finish within {within:?}");
        }
    }

    /// The newest checkpoint published (for the admin listener).
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.latest.lock().ok().and_then(|c| c.clone())
    }
}

/// The record of one decision, before it is sealed into the chain.
fn record_body(e: &Entry, seq: u64) -> Map<String, Value> {
    let principal = e.principal.as_ref().map(|(sub, groups)| json!({"sub": sub, "groups": groups}));
    let v = json!({
        "seq": seq,
        "kind": "decision",
        "time": rfc3339(SystemTime::now()),
        "decision_id": e.decision_id,
        "principal": principal,
        "operation": {"rpc": e.rpc, "resource_type": e.resource_type},
        "target": e.target,
        "method": e.method,
        "path": e.path,
        "decision": e.decision,
        "allow": e.decision == "allow" || e.decision == "public",
        "reasons": e.reasons,
        "would_deny": e.would_deny,
        "break_glass": e.break_glass,
        "frozen_override": e.frozen_override,
        "bundle_revision": e.bundle_revision,
        "upstream_status": e.upstream_status,
        "status": e.status,
        "latency_ms": e.latency_ms,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub use crate::civil::{days_from_civil, rfc3339};

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
