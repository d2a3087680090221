//! Audit, after the request path: the keyed chain. Each record carries `seq`, the key id, `prev` (the MAC of the
//! record before it; zeros before the genesis record) and `mac` = HMAC-SHA256(key, domain || the record's JSON
//! without `mac`). A checkpoint is {seq, mac of the record at seq, time, key id} signed with the same key; it is
//! published where the log's writer cannot rewrite it later, so a log cut after it is found.

use std::path::PathBuf;

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `prev` of the genesis record (seq 0).
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Shortest key accepted, in bytes (after base64 decoding).
pub const MIN_KEY_BYTES: usize = 32;

/// Domain separation: a record MAC can never be replayed as a checkpoint MAC or the other way round.
const RECORD_DOMAIN: &[u8] = b"mlflow-gate audit record v1\n";
const CHECKPOINT_DOMAIN: &[u8] = b"mlflow-gate audit checkpoint v1\n";
const KEY_ID_DOMAIN: &[u8] = b"mlflow-gate audit key id v1\n";

/// How to generate a key, quoted in every key error.
pub const KEY_HINT: &str = "generate one with `head -c 32 /dev/urandom | base64`";

/// Where the audit key comes from (`[audit] key_file` or `key_env`); read when the gate starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the key as base64 text.
    File(PathBuf),
    /// An environment variable holding the key as base64 text.
    Env(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable ${v}"),
        }
    }
}

/// The HMAC key of the chain and its public id. `Debug` never shows the key.
#[derive(Clone)]
pub struct AuditKey {
    key: hmac::Key,
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(id {})", self.id)
    }
}

/// Why the key cannot be used. The message names the source, never the key.
#[derive(Debug, thiserror::Error)]
#[error("audit key ({source_}): {message}; {hint}", hint = KEY_HINT)]
pub struct KeyError {
    /// Where it was read from.
    pub source_: String,
    /// What is wrong.
    pub message: String,
}

impl AuditKey {
    /// Reads and decodes the key (base64 text of at least [`MIN_KEY_BYTES`] bytes).
    pub fn load(source: &KeySource) -> Result<AuditKey, KeyError> {
        let err = |message: String| KeyError { source_: source.to_string(), message };
        let text = match source {
            KeySource::File(path) => std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?,
            KeySource::Env(var) => std::env::var(var).map_err(|_| err("not set (or not UTF-8)".into()))?,
        };
        AuditKey::from_base64(&text).map_err(err)
    }

    /// Decodes base64 text (surrounding whitespace ignored, padding optional).
    pub fn from_base64(text: &str) -> Result<AuditKey, String> {
        let compact: String = text.split_whitespace().collect();
        if compact.is_empty() {
            return Err("empty".into());
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(compact.trim_end_matches('='))
            .map_err(|_| "not base64 text".to_string())?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!("{} bytes after base64 decoding; at least {MIN_KEY_BYTES} are needed", bytes.len()));
        }
        Ok(AuditKey::from_bytes(&bytes))
    }

    /// A key from raw bytes (tests, and after decoding).
    pub fn from_bytes(bytes: &[u8]) -> AuditKey {
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        h.update(bytes);
        let id = hex(&h.finalize()).chars().take(16).collect();
        AuditKey { key: hmac::Key::new(hmac::HMAC_SHA256, bytes), id }
    }

    /// The key id written in every record and checkpoint: 16 hex digits of a domain-separated SHA-256 of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn sign(&self, domain: &[u8], message: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(domain);
        ctx.update(message);
        hex(ctx.sign().as_ref())
    }

    fn verify(&self, domain: &[u8], message: &[u8], mac_hex: &str) -> bool {
        let Some(tag) = unhex(mac_hex) else { return false };
        let mut data = Vec::with_capacity(domain.len() + message.len());
        data.extend_from_slice(domain);
        data.extend_from_slice(message);
        hmac::verify(&self.key, &data, &tag).is_ok()
    }

    /// Completes a record: adds `key_id` and `prev`, then `mac` over everything before it.
    pub fn seal(&self, mut body: Map<String, Value>, prev: &str) -> Map<String, Value> {
        body.insert("key_id".into(), Value::from(self.id.as_str()));
        body.insert("prev".into(), Value::from(prev));
        let mac = self.sign(RECORD_DOMAIN, Value::Object(body.clone()).to_string().as_bytes());
        body.insert("mac".into(), Value::String(mac));
        body
    }

    /// Whether `mac` is this key's MAC of `body` (the record without its `mac`).
    pub fn verify_record(&self, body: &Map<String, Value>, mac: &str) -> bool {
        self.verify(RECORD_DOMAIN, Value::Object(body.clone()).to_string().as_bytes(), mac)
    }

    /// A signed checkpoint of the record `seq` whose MAC is `mac`.
    pub fn checkpoint(&self, seq: u64, mac: &str, time: String) -> Checkpoint {
        self.checkpoint_of(seq, mac, time, None)
    }

    /// A signed checkpoint of the chain of `replica` (a fleet's gate; signed too, so it cannot be moved to another
    /// replica's chain).
    pub fn checkpoint_of(&self, seq: u64, mac: &str, time: String, replica: Option<&str>) -> Checkpoint {
        let mut c = Checkpoint {
            seq,
            mac: mac.into(),
            time,
            key_id: self.id.clone(),
            replica: replica.map(str::to_owned),
            checkpoint_mac: String::new(),
        };
        c.checkpoint_mac = self.sign(CHECKPOINT_DOMAIN, &c.signed_bytes());
        c
    }

    /// Whether the checkpoint's own MAC is this key's.
    pub fn verify_checkpoint(&self, c: &Checkpoint) -> bool {
        self.verify(CHECKPOINT_DOMAIN, &c.signed_bytes(), &c.checkpoint_mac)
    }
}

/// A signed statement "the chain had reached record `seq`, whose MAC is `mac`, at `time`".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the newest record written (and flushed) when the checkpoint was taken.
    pub seq: u64,
    /// That record's MAC.
    pub mac: String,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The replica whose chain it is (`[fleet] replica_id`); absent in checkpoints of gates before fleets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// HMAC-SHA256 over the fields above (`replica` only when present).
    pub checkpoint_mac: String,
}

impl Checkpoint {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut signed =
            serde_json::json!({"seq": self.seq, "mac": self.mac, "time": self.time, "key_id": self.key_id});
        if let (Some(replica), Some(m)) = (&self.replica, signed.as_object_mut()) {
            m.insert("replica".into(), Value::from(replica.as_str()));
        }
        signed.to_string().into_bytes()
    }

    /// The checkpoint as one JSON object (what the process log, the webhook and `GET /audit/checkpoint` carry).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Finds a checkpoint in a JSON value: the checkpoint object itself, or one nested in a webhook payload or a
    /// process log line (under `checkpoint`, possibly as a JSON string, or under `fields`).
    pub fn find_in(value: &Value) -> Option<Checkpoint> {
        Checkpoint::find(value, 0)
    }

    fn find(value: &Value, depth: u8) -> Option<Checkpoint> {
        if depth > 4 {
            return None;
        }
        match value {
            Value::Object(m) if m.contains_key("checkpoint_mac") => serde_json::from_value(value.clone()).ok(),
            Value::Object(m) => ["checkpoint", "fields"].iter().find_map(|k| Checkpoint::find(m.get(*k)?, depth + 1)),
            Value::String(s) => Checkpoint::find(&serde_json::from_str(s).ok()?, depth + 1),
            _ => None,
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}
