//! Audit, at the end of every request that reached a decision: one JSON record per decision (allowed or denied),
//! in a keyed chain (HMAC-SHA256, see `chain`) that starts at a genesis record, so that `mlflow-gate audit verify`
//! finds records altered, deleted (at the start, in the middle, or at the end given a checkpoint), reordered or
//! written with another key. Records are written by one background thread (the request path only sends them on a
//! channel), to a file with size-based rotation or to stdout, and flushed before the gate exits. The same thread
//! publishes signed checkpoints (every N records, every T seconds, at rotation and at shutdown) to the process log,
//! to a publisher callback (webhooks) and to the admin listener.

mod chain;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

pub use chain::{AuditKey, Checkpoint, KeyError, KeySource, GENESIS_PREV, KEY_HINT, MIN_KEY_BYTES};
pub use verify::{verify, Problem, Summary, Verifier};

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

/// Most records handled between two flushes (and checks of the checkpoint timer) under a flood.
const BATCH: usize = 1024;

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

enum Out {
    Stdout(std::io::Stdout),
    File(std::io::BufWriter<std::fs::File>),
}

impl Out {
    fn file(path: &Path) -> Result<Out, AuditError> {
        Ok(Out::File(std::io::BufWriter::new(open_append(path)?)))
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Stdout(s) => s,
            Out::File(f) => f,
        }
    }

    /// Flushes, and for a file also asks the disk to keep what a checkpoint is about to vouch for.
    fn sync(&mut self) -> std::io::Result<()> {
        self.writer().flush()?;
        match self {
            Out::Stdout(_) => Ok(()),
            Out::File(f) => f.get_ref().sync_data(),
        }
    }
}

struct Writer {
    sink: Sink,
    out: Out,
    size: u64,
    key: AuditKey,
    /// The MAC and sequence number of the last record written.
    prev: String,
    seq: u64,
    every: u64,
    interval: Duration,
    checkpointed: Option<u64>,
    due: Instant,
    publish: Publish,
    latest: Arc<Mutex<Option<Checkpoint>>>,
}

impl Writer {
    fn open(
        settings: &Settings,
        key: AuditKey,
        publish: Publish,
        latest: Arc<Mutex<Option<Checkpoint>>>,
    ) -> Result<Writer, AuditError> {
        let (out, size, last) = match &settings.sink {
            Sink::Stdout => (Out::Stdout(std::io::stdout()), 0, None),
            Sink::File { path, .. } => {
                let last = last_link(path)?;
                let out = Out::file(path)?;
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                (out, size, last)
            }
        };
        let mut w = Writer {
            sink: settings.sink.clone(),
            out,
            size,
            key,
            prev: GENESIS_PREV.into(),
            seq: 0,
            every: settings.checkpoint_every_records.max(1),
            interval: settings.checkpoint_interval,
            checkpointed: None,
            due: Instant::now() + settings.checkpoint_interval,
            publish,
            latest,
        };
        match last {
            Some((mac, seq, key_id)) => {
                if key_id != w.key.id() {
                    tracing::warn!(from = %key_id, to = %w.key.id(), seq,
                        "the audit key changed; verify the older records with the older key");
                }
                tracing::info!(seq, key_id = %w.key.id(), "audit chain continued");
                (w.prev, w.seq) = (mac, seq);
            }
            None => {
                let genesis = json!({"seq": 0, "kind": "genesis", "time": rfc3339(SystemTime::now()),
                    "gate_version": env!("CARGO_PKG_VERSION")});
                w.append(genesis.as_object().cloned().unwrap_or_default());
                tracing::info!(key_id = %w.key.id(), "audit chain started (genesis record 0)");
            }
        }
        Ok(w)
    }

    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        loop {
            let wait = self.due.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    self.handle(msg);
                    for msg in rx.try_iter().take(BATCH) {
                        self.handle(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.flush();
            if Instant::now() >= self.due {
                if self.checkpointed != Some(self.seq) {
                    self.checkpoint();
                }
                self.due = Instant::now() + self.interval;
            }
        }
        self.flush();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(entry) => self.write(&entry),
            Msg::Flush(done) => {
                self.flush();
                let _ = done.send(());
            }
            Msg::Close(done) => {
                self.checkpoint();
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, entry: &Entry) {
        let body = record_body(entry, self.seq + 1);
        if self.append(body) {
            if self.checkpointed.is_none_or(|c| self.seq >= c + self.every) {
                self.checkpoint();
            }
            self.rotate_if_full();
        }
    }

    /// Seals and writes one record; the chain advances only when the line was written.
    fn append(&mut self, body: Map<String, Value>) -> bool {
        let seq = body.get("seq").and_then(Value::as_u64).unwrap_or(self.seq + 1);
        let record = self.key.seal(body, &self.prev);
        let line = Value::Object(record.clone()).to_string();
        if let Err(e) = writeln!(self.out.writer(), "{line}") {
            tracing::error!(error = %e, seq, "writing an audit record failed");
            return false;
        }
        self.prev = record.get("mac").and_then(Value::as_str).unwrap_or_default().to_string();
        self.seq = seq;
        self.size += line.len() as u64 + 1;
        true
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.writer().flush() {
            tracing::error!(error = %e, "flushing the audit log failed");
        }
    }

    /// Makes the records durable, then signs and publishes {seq, mac} of the newest one.
    fn checkpoint(&mut self) {
        if let Err(e) = self.out.sync() {
            tracing::error!(error = %e, "syncing the audit log failed; no checkpoint published");
            return;
        }
        let c = self.key.checkpoint(self.seq, &self.prev, rfc3339(SystemTime::now()));
        tracing::info!(seq = c.seq, checkpoint = %c.to_json(), "audit checkpoint");
        (self.publish)(&c);
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(c);
        }
        self.checkpointed = Some(self.seq);
        self.due = Instant::now() + self.interval;
    }

    /// Rotation renames `audit.log` to `audit.log.1` (shifting older ones); the chain continues in the new file.
    /// A checkpoint of the rotated file's last record is published first, so that once older files are deleted
    /// (`keep`), the oldest kept file can still be verified from it (`--from-checkpoint`).
    fn rotate_if_full(&mut self) {
        let Sink::File { path, max_bytes, keep } = self.sink.clone() else { return };
        if self.size < max_bytes {
            return;
        }
        self.checkpoint();
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
        match Out::file(path) {
            Ok(out) => {
                self.out = out;
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
        .map_err(|e| AuditError::File { path: path.display().to_string(), message: e.to_string() })
}

/// The MAC, sequence number and key id of the last record written (to continue the chain after a restart): the
/// last record of the active file, or, when a rotation just left it empty, of the newest rotated file
/// (`<file>.1`). `None`: no records, a new chain starts.
fn last_link(path: &Path) -> Result<Option<(String, u64, String)>, AuditError> {
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    match last_record(path)? {
        Some(link) => Ok(Some(link)),
        None => last_record(&rotated),
    }
}

fn last_record(path: &Path) -> Result<Option<(String, u64, String)>, AuditError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    let Some(last) = text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()) else { return Ok(None) };
    let field = |k: &str| last.get(k).and_then(Value::as_str).map(str::to_owned);
    match (field("mac"), last.get("seq").and_then(Value::as_u64), field("key_id")) {
        (Some(mac), Some(seq), Some(key_id)) => Ok(Some((mac, seq, key_id))),
        _ => Err(AuditError::File {
            path: path.display().to_string(),
            message: "its last record has no mac/seq/key_id: it was written by an older gate (unkeyed chain). \
                      Move it and its rotated files aside (verify them with the older release); a new keyed chain \
                      then starts"
                .into(),
        }),
    }
}

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
mod tests;
