//! Audit, after the request path: the writer thread. It seals each record into the chain, appends it to the file
//! (rotating by size) or to stdout, and publishes a signed checkpoint every N records, every T seconds, before each
//! rotation and when asked at shutdown.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::{
    record_body, rfc3339, AuditError, AuditKey, Checkpoint, Entry, Msg, Publish, Settings, Sink, GENESIS_PREV,
};

/// Most records handled between two flushes (and checks of the checkpoint timer) under a flood.
const BATCH: usize = 1024;

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

pub(super) struct Writer {
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
    replica: Option<String>,
}

impl Writer {
    pub(super) fn open(
        settings: &Settings,
        key: AuditKey,
        publish: Publish,
        latest: Arc<Mutex<Option<Checkpoint>>>,
    ) -> Result<Writer, AuditError> {
        let (out, size, last) = match &settings.sink {
            Sink::Stdout => (Out::Stdout(std::io::stdout()), 0, None),
            Sink::File { path, .. } => {
                let last = last_link(path)?;
                let mut out = Out::file(path)?;
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                if ends_in_a_partial_line(path) {
                    // Left by a crash mid-write: end it, so the next record is not glued to it. It stays in the
                    // file, and `verify` reports it (the chain continues from the last complete record).
                    tracing::warn!(file = %path.display(), "the audit file ends in a partial line (a crash while writing)");
                    let _ = writeln!(out.writer());
                }
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
            replica: settings.replica.clone(),
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

    pub(super) fn run(mut self, rx: &mpsc::Receiver<Msg>) {
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

    pub(super) fn write(&mut self, entry: &Entry) {
        let body = record_body(entry, self.seq + 1);
        if self.append(body) {
            if self.checkpointed.is_none_or(|c| self.seq >= c + self.every) {
                self.checkpoint();
            }
            self.rotate_if_full();
        }
    }

    /// Seals and writes one record; the chain advances only when the line was written.
    fn append(&mut self, mut body: Map<String, Value>) -> bool {
        let seq = body.get("seq").and_then(Value::as_u64).unwrap_or(self.seq + 1);
        if let Some(replica) = &self.replica {
            body.insert("replica".into(), Value::from(replica.as_str()));
        }
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
    pub(super) fn checkpoint(&mut self) {
        if let Err(e) = self.out.sync() {
            tracing::error!(error = %e, "syncing the audit log failed; no checkpoint published");
            return;
        }
        let c = self.key.checkpoint_of(self.seq, &self.prev, rfc3339(SystemTime::now()), self.replica.as_deref());
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

fn ends_in_a_partial_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1)).is_ok() && file.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

/// The MAC, sequence number and key id of the last record written (to continue the chain after a restart): the
/// last record of the active file, or, when a rotation just left it empty, of the newest rotated file
/// (`<file>.1`). `None`: no records, a new chain starts.
pub(super) fn last_link(path: &Path) -> Result<Option<(String, u64, String)>, AuditError> {
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
