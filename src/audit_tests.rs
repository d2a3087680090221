use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map};
use sha2::Digest;

use super::writer::{last_link, Writer};
use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key() -> AuditKey {
    AuditKey::from_bytes(KEY)
}

fn entry(i: u32) -> Entry {
    Entry {
        decision_id: format!("req-{i}"),
        principal: Some(("alice".into(), vec!["ml-senior".into()])),
        rpc: "TransitionModelVersionStage".into(),
        resource_type: "model_version".into(),
        target: json!({"name": "m", "version": "1", "stage": "Production"}),
        method: "POST".into(),
        path: "/api/2.0/mlflow/model-versions/transition-stage".into(),
        decision: if i.is_multiple_of(2) { "allow".into() } else { "denied".into() },
        reasons: vec!["only the CI service account may transition to Production".into()],
        bundle_revision: "abc".into(),
        status: 403,
        ..Entry::default()
    }
}

type Published = Arc<Mutex<Vec<Checkpoint>>>;

/// Writes `n` records with `with` as key (checkpoint every 3 records), as a gate run would; returns the active
/// file and the checkpoints published.
fn run_gate(dir: &Path, n: u32, max_bytes: u64, with: &AuditKey) -> (PathBuf, Vec<Checkpoint>) {
    let path = dir.join("audit.log");
    let settings = Settings {
        sink: Sink::File { path: path.clone(), max_bytes, keep: 50 },
        key: KeySource::Env("UNUSED".into()),
        checkpoint_every_records: 3,
        checkpoint_interval: Duration::from_secs(3600),
        replica: None,
    };
    let published: Published = Arc::default();
    let sink = published.clone();
    let publish: Publish = Box::new(move |c| sink.lock().unwrap_or_else(|e| panic!("{e}")).push(c.clone()));
    let latest = Arc::new(Mutex::new(None));
    let mut w = Writer::open(&settings, with.clone(), publish, latest.clone()).unwrap_or_else(|e| panic!("{e}"));
    w.checkpoint();
    for i in 0..n {
        w.write(&entry(i));
    }
    w.checkpoint(); // as at shutdown
    let all = published.lock().unwrap_or_else(|e| panic!("{e}")).clone();
    assert_eq!(latest.lock().unwrap_or_else(|e| panic!("{e}")).as_ref(), all.last());
    (path, all)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn rewrite(path: &Path, l: &[String]) {
    std::fs::write(path, l.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
}

fn with_key() -> Verifier {
    Verifier { keys: vec![key()], ..Verifier::default() }
}

fn rotated(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        (1..=50).rev().map(|n| PathBuf::from(format!("{}.{n}", path.display()))).filter(|p| p.exists()).collect();
    files.push(path.to_path_buf());
    files
}

#[test]
fn an_intact_chain_starts_at_genesis_verifies_and_continues_after_reopening() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    run_gate(dir.path(), 5, u64::MAX, &key());
    let (path, checkpoints) = run_gate(dir.path(), 3, u64::MAX, &key());
    let last = checkpoints.last().cloned().unwrap_or_else(|| panic!("no checkpoint"));
    let v = Verifier { checkpoints: vec![last.clone()], ..with_key() };
    let summary = verify(std::slice::from_ref(&path), &v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.records, summary.first_seq, summary.last_seq), (9, 0, 8));
    assert_eq!(summary.matched, vec![8]);
    assert_eq!(last.seq, 8);
    let first: Value = serde_json::from_str(&lines(&path)[0]).unwrap_or_default();
    assert_eq!((first["seq"].as_u64(), first["kind"].as_str()), (Some(0), Some("genesis")));
    assert_eq!(first["prev"], GENESIS_PREV);
    assert_eq!(first["key_id"], key().id());
    let second: Value = serde_json::from_str(&lines(&path)[1]).unwrap_or_default();
    assert_eq!(second["principal"]["sub"], "alice");
    assert_eq!(second["prev"], first["mac"]);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(!text.contains("Bearer") && !text.contains("0123456789abcdef"), "the key is never written");
}

#[test]
fn deleting_the_first_records_is_reported_with_their_numbers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 6, u64::MAX, &key());
    rewrite(&path, &lines(&path)[3..]);
    let err = verify(std::slice::from_ref(&path), &with_key()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("records 0..2 are missing (deleted from the start)") && err.contains("line 1"), "{err}");
}

#[test]
fn a_record_rewritten_as_an_allowed_ci_call_with_its_unkeyed_parts_recomputed_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 6, u64::MAX, &key());
    let mut l = lines(&path);
    let mut record: Map<String, Value> = serde_json::from_str(&l[2]).unwrap_or_default();
    assert_eq!(record["decision"], "denied");
    record.insert("principal".into(), json!({"sub": "ci-bot", "groups": ["mlflow-ci"]}));
    record.insert("decision".into(), json!("allow"));
    record.insert("allow".into(), json!(true));
    record.insert("status".into(), json!(200));
    // What a tamperer without the key can do: recompute a hash over the record and relink the next one.
    record.remove("mac");
    let forged_mac = chain::hex(&sha2::Sha256::digest(Value::Object(record.clone()).to_string().as_bytes()));
    record.insert("mac".into(), json!(forged_mac));
    l[2] = Value::Object(record).to_string();
    let mut next: Map<String, Value> = serde_json::from_str(&l[3]).unwrap_or_default();
    next.insert("prev".into(), json!(forged_mac));
    l[3] = Value::Object(next).to_string();
    rewrite(&path, &l);
    let err = verify(std::slice::from_ref(&path), &with_key()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("line 3: record 2 was altered"), "{err}");
    // Sealing it with another key is no better: the key id says so.
    let other = AuditKey::from_bytes(b"another key, also thirty-two byt");
    let mut record: Map<String, Value> = serde_json::from_str(&l[2]).unwrap_or_default();
    record.remove("mac");
    record.remove("key_id");
    let prev = record.remove("prev").and_then(|p| p.as_str().map(str::to_owned)).unwrap_or_default();
    l[2] = Value::Object(other.seal(record, &prev)).to_string();
    rewrite(&path, &l);
    let err = verify(std::slice::from_ref(&path), &with_key()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("record 2 was written with audit key id") && err.contains("wrong key"), "{err}");
}

#[test]
fn cutting_the_last_records_is_found_against_a_published_checkpoint() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, checkpoints) = run_gate(dir.path(), 8, u64::MAX, &key());
    let last = checkpoints.last().cloned().unwrap_or_else(|| panic!("no checkpoint"));
    assert_eq!(last.seq, 8);
    let l = lines(&path);
    rewrite(&path, &l[..6]);
    assert!(verify(std::slice::from_ref(&path), &with_key()).is_ok(), "without a checkpoint a cut is invisible");
    let v = Verifier { checkpoints: vec![last.clone()], ..with_key() };
    let err = verify(std::slice::from_ref(&path), &v).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("the log ends at record 5") && err.contains("records 6..8 are missing from the end"), "{err}");
    // A log rewritten from record 6 on (say, by replaying an older copy) does not match the checkpoint either.
    let mut other = l.clone();
    other[8] = other[7].clone();
    rewrite(&path, &other);
    assert!(verify(std::slice::from_ref(&path), &v).is_err());
    // A forged checkpoint is refused before anything else.
    let forged = Checkpoint { seq: 3, ..last };
    let v = Verifier { checkpoints: vec![forged], ..with_key() };
    let err = verify(std::slice::from_ref(&path), &v).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("checkpoint of record 3") && err.contains("forged"), "{err}");
}

#[test]
fn deleting_or_reordering_in_the_middle_is_located() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 6, u64::MAX, &key());
    let original = lines(&path);
    let check = |l: Vec<String>| {
        rewrite(&path, &l);
        verify(std::slice::from_ref(&path), &with_key()).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let mut removed = original.clone();
    removed.remove(3);
    let err = check(removed);
    assert!(err.contains("line 4: record 3 is missing"), "{err}");
    let mut reordered = original.clone();
    reordered.swap(2, 3);
    let err = check(reordered);
    assert!(err.contains("line 3: record 2 is missing"), "{err}");
    let mut duplicated = original.clone();
    duplicated.insert(3, original[2].clone());
    let err = check(duplicated);
    assert!(err.contains("line 4: record 2 is out of place after record 2"), "{err}");
    let mut injected = original.clone();
    injected[2] = injected[2].replacen("{\"seq\"", "{\"decision\":\"allow\",\"seq\"", 1);
    assert!(check(injected).contains("record 2 was altered"), "a duplicate key another reader might take");
    assert!(check(original).is_empty());
}

#[test]
fn wrong_key_is_reported_as_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 2, u64::MAX, &key());
    let v = Verifier { keys: vec![AuditKey::from_bytes(b"not the key, but thirty-two bytes")], ..Verifier::default() };
    let err = verify(std::slice::from_ref(&path), &v).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("line 1: record 0 was written with audit key id") && err.contains("wrong key"), "{err}");
    assert_eq!(verify(std::slice::from_ref(&path), &Verifier::default()), Err(Problem::NoKey));
}

#[test]
fn a_key_change_continues_the_chain_and_verifies_with_both_keys() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let new = AuditKey::from_bytes(b"the next key, thirty-two bytes!!");
    run_gate(dir.path(), 2, u64::MAX, &key());
    let (path, _) = run_gate(dir.path(), 2, u64::MAX, &new);
    let both = Verifier { keys: vec![key(), new.clone()], ..Verifier::default() };
    let summary = verify(std::slice::from_ref(&path), &both).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.records, summary.key_ids.len()), (5, 2));
    let only_new = Verifier { keys: vec![new], ..Verifier::default() };
    assert!(matches!(verify(std::slice::from_ref(&path), &only_new), Err(Problem::WrongKey { seq: 0, .. })));
}

#[test]
fn rotation_keeps_one_chain_and_rotated_away_files_need_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, checkpoints) = run_gate(dir.path(), 20, 2000, &key());
    let files = rotated(&path);
    assert!(files.len() >= 3, "expected rotation to have happened");
    let total: usize = files.iter().map(|f| lines(f).len()).sum();
    assert_eq!(verify(&files, &with_key()).map(|s| s.records), Ok(total as u64));
    // Dropping a whole rotated file from the middle breaks the chain.
    let mut gap = files.clone();
    gap.remove(1);
    assert!(matches!(verify(&gap, &with_key()), Err(Problem::Gap { .. })));
    // Dropping the oldest file (as `keep` does): missing from the start, unless anchored at the checkpoint
    // published when that file was rotated.
    let kept = &files[1..];
    let first: Value = serde_json::from_str(&lines(&kept[0])[0]).unwrap_or_default();
    let first_seq = first["seq"].as_u64().unwrap_or_default();
    assert!(matches!(verify(kept, &with_key()), Err(Problem::MissingStart { first, .. }) if first == first_seq));
    let anchor = checkpoints.iter().find(|c| c.seq + 1 == first_seq).cloned();
    assert!(anchor.is_some(), "a checkpoint is published at every rotation");
    let v = Verifier { from: anchor, ..with_key() };
    assert_eq!(verify(kept, &v).map(|s| s.first_seq), Ok(first_seq));
}

#[test]
fn a_restart_right_after_rotation_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 3, 1, &key());
    assert_eq!(lines(&path).len(), 0);
    run_gate(dir.path(), 2, u64::MAX, &key());
    assert_eq!(verify(&rotated(&path), &with_key()).map(|s| s.records), Ok(6));
}

#[test]
fn an_unkeyed_log_from_an_older_gate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    std::fs::write(&path, "{\"seq\":1,\"prev_hash\":\"00\",\"hash\":\"ab\"}\n").unwrap_or_else(|e| panic!("{e}"));
    let err = last_link(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("older gate") && err.contains("Move it"), "{err}");
}

#[test]
fn keys_are_base64_of_at_least_32_bytes_and_checkpoints_are_found_where_published() {
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY);
    assert_eq!(AuditKey::from_base64(&format!("{b64}\n")).map(|k| k.id().to_string()), Ok(key().id().to_string()));
    let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 31]);
    assert!(AuditKey::from_base64(&short).is_err_and(|e| e.contains("at least 32")));
    assert!(AuditKey::from_base64("not base64!").is_err());
    assert!(!format!("{:?}", key()).contains("0123"));
    let c = key().checkpoint(4, "ab", "2026-11-29T00:00:00.000Z".into());
    assert!(key().verify_checkpoint(&c));
    let log_line =
        json!({"level": "INFO", "fields": {"message": "audit checkpoint", "checkpoint": c.to_json().to_string()}});
    let webhook = json!({"event": "AUDIT_CHECKPOINT", "checkpoint": c.to_json()});
    assert_eq!(Checkpoint::find_in(&log_line), Some(c.clone()));
    assert_eq!(Checkpoint::find_in(&webhook), Some(c.clone()));
    assert_eq!(Checkpoint::find_in(&c.to_json()), Some(c));
}

#[test]
fn rfc3339_is_correct() {
    assert_eq!(rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(1_795_714_970_236)), "2026-11-26T17:42:50.236Z");
    assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn a_started_log_publishes_at_start_on_its_timer_and_at_close() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key_file = dir.path().join("audit.key");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY);
    std::fs::write(&key_file, b64).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    let settings = Settings {
        sink: Sink::File { path: path.clone(), max_bytes: u64::MAX, keep: 2 },
        key: KeySource::File(key_file),
        checkpoint_every_records: 1000,
        checkpoint_interval: Duration::from_millis(50),
        replica: Some("gate-7".into()),
    };
    let (tx, rx) = std::sync::mpsc::channel::<Checkpoint>();
    let tx = Mutex::new(tx);
    let publish: Publish = Box::new(move |c| {
        if let Ok(t) = tx.lock() {
            let _ = t.send(c.clone());
        }
    });
    let log = AuditLog::start(settings, publish).unwrap_or_else(|e| panic!("{e}"));
    let next = || rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("no checkpoint: {e}"));
    assert_eq!(next().seq, 0, "a checkpoint of the genesis record at start");
    log.record(entry(1));
    assert_eq!(next().seq, 1, "the timer publishes the new record (1000 records are far off)");
    log.close(Duration::from_secs(10)).await;
    let last = next();
    assert_eq!((last.seq, log.latest_checkpoint()), (1, Some(last.clone())));
    assert_eq!(last.replica.as_deref(), Some("gate-7"), "a fleet replica's checkpoints name it");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(text.lines().all(|l| l.contains(r#""replica":"gate-7""#)), "and so do its records: {text}");
    let mut moved = last.clone();
    moved.replica = Some("gate-8".into());
    assert!(!key().verify_checkpoint(&moved), "the replica is signed: a checkpoint cannot change chains");
    let v = Verifier { checkpoints: vec![last], ..with_key() };
    assert_eq!(verify(std::slice::from_ref(&path), &v).map(|s| s.matched), Ok(vec![1]));
    let missing = Settings {
        sink: Sink::Stdout,
        key: KeySource::Env("MLFLOW_GATE_TEST_UNSET_AUDIT_KEY".into()),
        checkpoint_every_records: 1,
        checkpoint_interval: Duration::from_secs(1),
        replica: None,
    };
    let err = AuditLog::start(missing, Box::new(|_| {})).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("$MLFLOW_GATE_TEST_UNSET_AUDIT_KEY") && err.contains(KEY_HINT), "{err}");
}

#[test]
fn a_partial_line_left_by_a_crash_is_not_glued_to_the_next_record_and_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _) = run_gate(dir.path(), 2, u64::MAX, &key());
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut file, b"{\"seq\":3,\"kind\":\"deci").unwrap_or_else(|e| panic!("{e}"));
    run_gate(dir.path(), 1, u64::MAX, &key());
    let l = lines(&path);
    assert_eq!(l.len(), 5);
    let next: Value = serde_json::from_str(&l[4]).unwrap_or_default();
    assert_eq!(next["seq"], 3, "the chain continues from the last complete record");
    let err = verify(std::slice::from_ref(&path), &with_key()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("line 4: not a JSON audit record") && err.contains("crash"), "{err}");
}
