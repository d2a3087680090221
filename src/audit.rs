//! Audit, at the end of every request that reached a decision: one JSON record per decision (allowed or denied),
//! hash-chained so that `mlflow-gate audit verify` finds the first record that was altered, removed or reordered.
//! Records are written by one background task (the request path only sends them on a channel), to a file with
//! size-based rotation or to stdout, and flushed before the gate exits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// The hash that precedes the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    /// Method and canonical path.
    pub method: String,
    /// Canonical path.
    pub path: String,
    /// allow, deny, unauthenticated, bad_request, policy_error, ...
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

enum Msg {
    Record(Box<Entry>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
}

/// Why the audit log could not start or write.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {message}")]
pub struct AuditError {
    /// The file.
    pub path: String,
    /// What failed.
    pub message: String,
}

impl AuditLog {
    /// Opens the sink (continuing the chain of an existing file) and starts the writer task.
    pub fn start(sink: Sink) -> Result<AuditLog, AuditError> {
        let mut writer = Writer::open(sink)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Record(entry) => writer.write(&entry),
                        Msg::Flush(done) => {
                            writer.flush();
                            let _ = done.send(());
                        }
                    }
                    if rx.is_empty() {
                        writer.flush();
                    }
                }
                writer.flush();
            })
            .map_err(|e| AuditError { path: "(writer)".into(), message: e.to_string() })?;
        Ok(AuditLog { tx })
    }

    /// Queues a record (never blocks the request).
    pub fn record(&self, entry: Entry) {
        if self.tx.send(Msg::Record(Box::new(entry))).is_err() {
            tracing::error!("the audit writer has stopped; a record was lost");
        }
    }

    /// Waits until every record queued so far is written and flushed (at shutdown).
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }
}

struct Writer {
    sink: Sink,
    out: Box<dyn Write + Send>,
    size: u64,
    prev: String,
    seq: u64,
}

impl Writer {
    fn open(sink: Sink) -> Result<Writer, AuditError> {
        let (out, size, prev, seq): (Box<dyn Write + Send>, u64, String, u64) = match &sink {
            Sink::Stdout => (Box::new(std::io::stdout()), 0, GENESIS.to_string(), 0),
            Sink::File { path, .. } => {
                let (prev, seq) = last_link(path);
                let file = open_append(path)?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(std::io::BufWriter::new(file)), size, prev, seq)
            }
        };
        Ok(Writer { sink, out, size, prev, seq })
    }

    fn write(&mut self, entry: &Entry) {
        self.seq += 1;
        let record = chain(record_body(entry, self.seq), &self.prev);
        let line = record.to_string();
        if let Err(e) = writeln!(self.out, "{line}") {
            tracing::error!(error = %e, "writing an audit record failed");
            return;
        }
        self.prev = record.get("hash").and_then(Value::as_str).unwrap_or_default().to_string();
        self.size += line.len() as u64 + 1;
        self.rotate_if_full();
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, "flushing the audit log failed");
        }
    }

    /// Rotation renames `audit.log` to `audit.log.1` (shifting older ones); the chain continues in the new file.
    fn rotate_if_full(&mut self) {
        let Sink::File { path, max_bytes, keep } = self.sink.clone() else { return };
        if self.size < max_bytes {
            return;
        }
        self.flush();
        let (path, keep) = (&path, &keep);
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(*keep));
        for n in (1..*keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(path, numbered(1)) {
            tracing::error!(error = %e, "rotating the audit log failed; continuing in the same file");
            return;
        }
        match open_append(path) {
            Ok(file) => {
                self.out = Box::new(std::io::BufWriter::new(file));
                self.size = 0;
            }
            Err(e) => tracing::error!(error = %e, "reopening the audit log after rotation failed"),
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError { path: path.display().to_string(), message: e.to_string() })
}

/// The hash and sequence number of the last record written (to continue the chain after a restart): the last
/// record of the active file, or, when a rotation just left it empty, of the newest rotated file (`<file>.1`).
fn last_link(path: &Path) -> (String, u64) {
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    last_record(path).or_else(|| last_record(&rotated)).unwrap_or_else(|| (GENESIS.to_string(), 0))
}

fn last_record(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| Some((v.get("hash")?.as_str()?.to_string(), v.get("seq")?.as_u64()?)))
}

fn record_body(e: &Entry, seq: u64) -> Map<String, Value> {
    let principal = e.principal.as_ref().map(|(sub, groups)| json!({"sub": sub, "groups": groups}));
    let v = json!({
        "seq": seq,
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

/// Adds `prev_hash` and `hash` = SHA-256(prev_hash + the record's JSON without `hash`).
fn chain(mut body: Map<String, Value>, prev: &str) -> Value {
    body.insert("prev_hash".into(), Value::String(prev.to_string()));
    let hash = hash_of(&body);
    body.insert("hash".into(), Value::String(hash));
    Value::Object(body)
}

fn hash_of(body: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update(Value::Object(body.clone()).to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a chain spread over files given oldest first (e.g. `audit.log.2 audit.log.1 audit.log`). Returns the
/// number of records, or where the chain first breaks.
pub fn verify(files: &[PathBuf]) -> Result<u64, String> {
    let mut prev: Option<String> = None;
    let mut seq: Option<u64> = None;
    let mut count = 0;
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{} line {}", file.display(), i + 1);
            let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line) else {
                return Err(format!("{at}: not a JSON record (altered or truncated)"));
            };
            let stated = record.remove("hash").and_then(|h| h.as_str().map(str::to_owned)).unwrap_or_default();
            if hash_of(&record) != stated {
                return Err(format!("{at}: record altered (its hash does not match its contents)"));
            }
            let this_prev = record.get("prev_hash").and_then(Value::as_str).unwrap_or_default();
            let this_seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
            if let (Some(p), Some(s)) = (&prev, seq) {
                if this_prev != p || this_seq != s + 1 {
                    return Err(format!(
                        "{at}: chain broken before this record (expected seq {} after {s}, found {this_seq}): a record was removed or reordered",
                        s + 1
                    ));
                }
            }
            prev = Some(stated);
            seq = Some(this_seq);
            count += 1;
        }
    }
    Ok(count)
}

/// Formats a time as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
