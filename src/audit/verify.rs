//! Audit, offline (`mlflow-gate audit verify`): walks the keyed chain over files given oldest first and reports the
//! first problem with the record number: a record altered or written with another key, records missing at the
//! start (the files must begin at the genesis record or at a checkpoint the verifier is given), in the middle, or
//! at the end (given a published checkpoint), and records reordered or spliced in from another chain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::chain::{AuditKey, Checkpoint, GENESIS_PREV};

/// What a verification needs besides the files.
#[derive(Debug, Default)]
pub struct Verifier {
    /// The keys, by key id (several when the key was rotated).
    pub keys: Vec<AuditKey>,
    /// The files start at (or include) this checkpoint's record instead of the genesis record.
    pub from: Option<Checkpoint>,
    /// Published checkpoints the files must reach and match (truncation and rewrite detection).
    pub checkpoints: Vec<Checkpoint>,
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records checked.
    pub records: u64,
    /// The first record's sequence number (0: the genesis record).
    pub first_seq: u64,
    /// The last record's sequence number.
    pub last_seq: u64,
    /// Key ids seen, in order of first use.
    pub key_ids: Vec<String>,
    /// Sequence numbers of the checkpoints the files matched.
    pub matched: Vec<u64>,
    /// Checkpoints older than the files (nothing to compare them with).
    pub older: Vec<u64>,
}

/// The first problem found. Each message names the record (and the file and line) and says what it means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No key was given.
    #[error("no audit key given: pass --key-file FILE or --key-env VAR (the key the gate's [audit] key_file or key_env names)")]
    NoKey,
    /// A file cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// The files hold no record.
    #[error("the files hold no audit records")]
    Empty,
    /// A checkpoint whose own MAC does not verify.
    #[error("the checkpoint of record {seq} ({time}, key id {key_id}) does not verify with the key(s) given: it was forged or altered, or it belongs to another key")]
    BadCheckpoint {
        /// Its record.
        seq: u64,
        /// Its time.
        time: String,
        /// Its key id.
        key_id: String,
    },
    /// A line that is not a JSON record.
    #[error("{at}: not a JSON audit record (altered, or a partial line left by a crash)")]
    NotJson {
        /// File and line.
        at: String,
    },
    /// A record written with a key the verifier does not have.
    #[error("{at}: record {seq} was written with audit key id {found}, but the key(s) given have id(s) {given}: wrong key (give the key that was in force when it was written; several --key-file are allowed)")]
    WrongKey {
        /// File and line.
        at: String,
        /// The record.
        seq: u64,
        /// The record's key id.
        found: String,
        /// The ids of the keys given.
        given: String,
    },
    /// A record whose MAC does not match its contents.
    #[error("{at}: record {seq} was altered: its MAC does not match its contents (rewritten or edited after it was written)")]
    Altered {
        /// File and line.
        at: String,
        /// The record (its place in the chain).
        seq: u64,
    },
    /// The files do not begin at the genesis record or at the checkpoint given.
    #[error("{at}: {missing} missing (deleted from the start): the files begin at record {first}, not at {anchor}. If older files were rotated away on purpose, list them first, or pass --from-checkpoint with the checkpoint of record {last_missing} or a later one (one is published at every rotation)")]
    MissingStart {
        /// File and line of the first record.
        at: String,
        /// e.g. "records 0..4 are".
        missing: String,
        /// The first record's number.
        first: u64,
        /// What the files should begin at.
        anchor: String,
        /// The last missing record.
        last_missing: u64,
    },
    /// Records missing between two records.
    #[error("{at}: {missing} missing before this record (deleted, or moved elsewhere)")]
    Gap {
        /// File and line.
        at: String,
        /// e.g. "record 7 is".
        missing: String,
    },
    /// A record that comes after its successor.
    #[error("{at}: record {found} is out of place after record {after} (reordered or duplicated)")]
    OutOfOrder {
        /// File and line.
        at: String,
        /// Its number.
        found: u64,
        /// The record before it.
        after: u64,
    },
    /// A record whose `prev` is not the MAC of the record before it.
    #[error("{at}: record {seq} does not chain to {before} (its prev is not that record's MAC): replaced, or spliced in from another chain")]
    Unchained {
        /// File and line.
        at: String,
        /// Its number.
        seq: u64,
        /// "record N" or "the checkpoint of record N".
        before: String,
    },
    /// The log ends before a checkpoint's record.
    #[error("the log ends at record {last}, but the checkpoint of {time} shows record {seq} existed: {missing} missing from the end (cut, truncated)")]
    Truncated {
        /// The last record in the files.
        last: u64,
        /// The checkpoint's record.
        seq: u64,
        /// The checkpoint's time.
        time: String,
        /// e.g. "records 8..11 are".
        missing: String,
    },
    /// The record at a checkpoint's seq has another MAC.
    #[error("{at}: record {seq} does not match the checkpoint of {time} (another MAC): the log was altered or replaced after that checkpoint was published")]
    CheckpointMismatch {
        /// File and line.
        at: String,
        /// The record.
        seq: u64,
        /// The checkpoint's time.
        time: String,
    },
}

/// "record 3 is" or "records 3..7 are" (inclusive).
fn span(from: u64, to: u64) -> String {
    if from == to {
        format!("record {from} is")
    } else {
        format!("records {from}..{to} are")
    }
}

/// Checks the chain spread over `files`, oldest first (e.g. `audit.log.2 audit.log.1 audit.log`).
pub fn verify(files: &[PathBuf], v: &Verifier) -> Result<Summary, Problem> {
    if v.keys.is_empty() {
        return Err(Problem::NoKey);
    }
    let keys: BTreeMap<&str, &AuditKey> = v.keys.iter().map(|k| (k.id(), k)).collect();
    for c in v.checkpoints.iter().chain(&v.from) {
        if !keys.get(c.key_id.as_str()).is_some_and(|k| k.verify_checkpoint(c)) {
            return Err(Problem::BadCheckpoint { seq: c.seq, time: c.time.clone(), key_id: c.key_id.clone() });
        }
    }
    let mut walk = Walk { keys, v, last: None, first: 0, records: 0, key_ids: Vec::new(), at_checkpoints: Vec::new() };
    for file in files {
        let text =
            std::fs::read_to_string(file).map_err(|e| Problem::Unreadable(format!("{}: {e}", file.display())))?;
        for (i, line) in text.lines().enumerate() {
            walk.record(line, || format!("{} line {}", file.display(), i + 1))?;
        }
    }
    walk.finish()
}

/// The replica whose chain a file holds: `Some(replica)` from its first record (`Some(None)` for a gate's records
/// before fleets, which name none), or `None` when the file's first line is no record (an active file emptied by a
/// rotation, a damaged line): such a file belongs with the file given before it. `mlflow-gate audit verify`
/// groups the files it is given this way, one chain each.
pub fn replica_of_file(file: &std::path::Path) -> Result<Option<Option<String>>, Problem> {
    let text = std::fs::read_to_string(file).map_err(|e| Problem::Unreadable(format!("{}: {e}", file.display())))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str::<Value>(l).ok());
    Ok(first.map(|r| r.get("replica").and_then(Value::as_str).map(str::to_owned)))
}

struct Walk<'a> {
    keys: BTreeMap<&'a str, &'a AuditKey>,
    v: &'a Verifier,
    /// The last record checked: its number and MAC.
    last: Option<(u64, String)>,
    first: u64,
    records: u64,
    key_ids: Vec<String>,
    /// (seq, mac, where) of records that checkpoints name.
    at_checkpoints: Vec<(u64, String, String)>,
}

impl Walk<'_> {
    fn record(&mut self, line: &str, at: impl Fn() -> String) -> Result<(), Problem> {
        let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line) else {
            return Err(Problem::NotJson { at: at() });
        };
        let stated = record.get("seq").and_then(Value::as_u64);
        let position = self.last.as_ref().map(|(s, _)| s + 1).or(stated).unwrap_or(0);
        let mac = match record.remove("mac") {
            Some(Value::String(m)) => m,
            _ => return Err(Problem::Altered { at: at(), seq: position }),
        };
        let key_id = record.get("key_id").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(key) = self.keys.get(key_id.as_str()) else {
            let given = self.keys.keys().copied().collect::<Vec<_>>().join(", ");
            return Err(Problem::WrongKey { at: at(), seq: position, found: key_id, given });
        };
        if !key.verify_record(&record, &mac) || !written_as_is(line, &record, &mac) {
            return Err(Problem::Altered { at: at(), seq: position });
        }
        let (Some(seq), Some(prev)) = (stated, record.get("prev").and_then(Value::as_str)) else {
            return Err(Problem::Altered { at: at(), seq: position });
        };
        self.link(seq, prev, &record, &at)?;
        if !self.key_ids.contains(&key_id) {
            self.key_ids.push(key_id);
        }
        if self.v.checkpoints.iter().chain(&self.v.from).any(|c| c.seq == seq) {
            self.at_checkpoints.push((seq, mac.clone(), at()));
        }
        if self.records == 0 {
            self.first = seq;
        }
        self.records += 1;
        self.last = Some((seq, mac));
        Ok(())
    }

    /// Checks that record `seq` follows the previous record (or starts the files at an anchor).
    fn link(&self, seq: u64, prev: &str, record: &Map<String, Value>, at: &impl Fn() -> String) -> Result<(), Problem> {
        match (&self.last, &self.v.from) {
            (Some((last, last_mac)), _) => {
                if seq > last + 1 {
                    return Err(Problem::Gap { at: at(), missing: span(last + 1, seq - 1) });
                }
                if seq <= *last {
                    return Err(Problem::OutOfOrder { at: at(), found: seq, after: *last });
                }
                if prev != last_mac {
                    return Err(Problem::Unchained { at: at(), seq, before: format!("record {last}") });
                }
            }
            (None, None) => {
                if seq > 0 {
                    return Err(Problem::MissingStart {
                        at: at(),
                        missing: span(0, seq - 1),
                        first: seq,
                        anchor: "the genesis record 0".into(),
                        last_missing: seq - 1,
                    });
                }
                let genesis = record.get("kind").and_then(Value::as_str) == Some("genesis");
                if !genesis || prev != GENESIS_PREV {
                    return Err(Problem::Unchained { at: at(), seq, before: "the start of a chain".into() });
                }
            }
            (None, Some(from)) => {
                if seq > from.seq + 1 {
                    return Err(Problem::MissingStart {
                        at: at(),
                        missing: span(from.seq + 1, seq - 1),
                        first: seq,
                        anchor: format!("record {} (just after the checkpoint given)", from.seq + 1),
                        last_missing: seq - 1,
                    });
                }
                if seq == from.seq + 1 && prev != from.mac {
                    let before = format!("the checkpoint of record {}", from.seq);
                    return Err(Problem::Unchained { at: at(), seq, before });
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Summary, Problem> {
        let Some((last, _)) = self.last else { return Err(Problem::Empty) };
        let mut summary = Summary {
            records: self.records,
            first_seq: self.first,
            last_seq: last,
            key_ids: self.key_ids,
            matched: Vec::new(),
            older: Vec::new(),
        };
        for c in self.v.from.iter().chain(&self.v.checkpoints) {
            if c.seq > last {
                let (time, missing) = (c.time.clone(), span(last + 1, c.seq));
                return Err(Problem::Truncated { last, seq: c.seq, time, missing });
            }
            match self.at_checkpoints.iter().find(|(s, _, _)| *s == c.seq) {
                Some((_, mac, _)) if *mac == c.mac => summary.matched.push(c.seq),
                Some((seq, _, at)) => {
                    return Err(Problem::CheckpointMismatch { at: at.clone(), seq: *seq, time: c.time.clone() })
                }
                // Only the record right before the files (the --from-checkpoint anchor) or older ones are absent.
                None => summary.older.push(c.seq),
            }
        }
        Ok(summary)
    }
}

/// The line is exactly what the gate wrote for this record: no duplicate keys, reordering or re-encoding that a
/// reader other than `verify` could interpret differently.
fn written_as_is(line: &str, body: &Map<String, Value>, mac: &str) -> bool {
    let mut record = body.clone();
    record.insert("mac".into(), Value::from(mac));
    serde_json::to_string(&Value::Object(record)).is_ok_and(|written| written == line)
}
