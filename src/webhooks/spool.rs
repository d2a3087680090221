//! After the request path: the durable queue. Each pending delivery is one file in `spool_dir`, written atomically
//! (temp file, fsync, rename, fsync of the directory) before `emit` returns and removed once the delivery is done.
//! File names start with a sequence number so a restart re-queues them in the order they were emitted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The on-disk form of one pending delivery. `body` holds the exact bytes that are signed and sent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Format version (1).
    pub v: u32,
    /// Sent as `X-MLflow-Gate-Delivery-Id` on every attempt.
    pub delivery_id: String,
    /// The configured webhook this delivery belongs to.
    pub webhook_id: String,
    /// The event name (for logs).
    pub event: String,
    /// The request body.
    pub body: String,
}

/// A spool directory and the next sequence number.
pub(crate) struct Spool {
    dir: PathBuf,
    next: AtomicU64,
}

const TEMP_PREFIX: &str = ".tmp-";

impl Spool {
    /// Opens (creating it, owner-only) the directory and loads what it holds, oldest first. Leftover temp files
    /// (a crash before the rename, so never acknowledged) are removed; unreadable files are renamed to `*.bad`.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Spool, Vec<(PathBuf, Record)>)> {
        create_private_dir(dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(&path);
            } else if let Some(seq) = sequence_of(name) {
                files.push((seq, path));
            }
        }
        files.sort();
        let next = files.last().map_or(0, |(seq, _)| seq + 1);
        let records = files.into_iter().filter_map(|(_, path)| load(path)).collect();
        Ok((Spool { dir: dir.to_path_buf(), next: AtomicU64::new(next) }, records))
    }

    /// Writes the records durably; returns each one's file, or `None` where writing failed (logged).
    pub(crate) fn persist(&self, records: &[Record]) -> Vec<Option<PathBuf>> {
        let written: Vec<Option<PathBuf>> = records.iter().map(|r| self.write_one(r)).collect();
        if written.iter().any(Option::is_some) {
            if let Err(e) = std::fs::File::open(&self.dir).and_then(|d| d.sync_all()) {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot fsync the webhook spool directory");
            }
        }
        written
    }

    fn write_one(&self, record: &Record) -> Option<PathBuf> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{seq:020}-{}.json", record.delivery_id);
        let temp = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let path = self.dir.join(name);
        let result = serde_json::to_vec(record).map_err(std::io::Error::other).and_then(|bytes| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        });
        match result {
            Ok(()) => Some(path),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                tracing::error!(file = %path.display(), delivery_id = %record.delivery_id, error = %e,
                    "cannot write the webhook delivery to the spool; it is lost if the gate stops first");
                None
            }
        }
    }
}

/// Removes a finished delivery's file.
pub(crate) async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(file = %path.display(), error = %e, "cannot remove a finished webhook delivery");
        }
    }
}

fn sequence_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    let (seq, _) = stem.split_once('-')?;
    seq.parse().ok()
}

fn load(path: PathBuf) -> Option<(PathBuf, Record)> {
    let parsed = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string()));
    match parsed {
        Ok(record) if record.v == 1 => Some((path, record)),
        other => {
            let why = other.err().unwrap_or_else(|| "unknown format version".into());
            let mut bad = path.clone().into_os_string();
            bad.push(".bad");
            let _ = std::fs::rename(&path, &bad);
            tracing::error!(file = %path.display(), error = %why, "unreadable webhook delivery set aside as *.bad");
            None
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record { v: 1, delivery_id: id.into(), webhook_id: "w".into(), event: "E".into(), body: "{}".into() }
    }

    #[test]
    fn reopening_returns_records_in_order_and_drops_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, old) = Spool::open(dir.path()).unwrap();
        assert!(old.is_empty());
        let ids: Vec<String> = (0..12).map(|i| format!("id-{i}")).collect();
        let files = spool.persist(&ids.iter().map(|i| record(i)).collect::<Vec<_>>());
        assert!(files.iter().all(Option::is_some));
        std::fs::write(dir.path().join(".tmp-00000000000000000099-x.json"), "partial").unwrap();
        std::fs::write(dir.path().join("00000000000000000050-y.json"), "not json").unwrap();
        let (spool, again) = Spool::open(dir.path()).unwrap();
        let got: Vec<&str> = again.iter().map(|(_, r)| r.delivery_id.as_str()).collect();
        assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!dir.path().join(".tmp-00000000000000000099-x.json").exists());
        assert!(dir.path().join("00000000000000000050-y.json.bad").exists());
        assert_eq!(spool.next.load(Ordering::Relaxed), 51);
    }
}
