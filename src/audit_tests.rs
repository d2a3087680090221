use super::*;

fn entry(i: u32) -> Entry {
    Entry {
        decision_id: format!("req-{i}"),
        principal: Some(("alice".into(), vec!["ml-senior".into()])),
        rpc: "TransitionModelVersionStage".into(),
        resource_type: "model_version".into(),
        target: json!({"name": "m", "version": "1", "stage": "Production"}),
        method: "POST".into(),
        path: "/api/2.0/mlflow/model-versions/transition-stage".into(),
        decision: if i.is_multiple_of(2) { "allow".into() } else { "deny".into() },
        reasons: vec!["only the CI service account may transition to Production".into()],
        bundle_revision: "abc".into(),
        status: 403,
        ..Entry::default()
    }
}

fn write_records(dir: &Path, n: u32, max_bytes: u64) -> PathBuf {
    let path = dir.join("audit.log");
    let mut w = Writer::open(Sink::File { path: path.clone(), max_bytes, keep: 5 }).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        w.write(&entry(i));
    }
    w.flush();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn an_intact_chain_verifies_and_continues_after_reopening() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_records(dir.path(), 5, u64::MAX);
    let path = write_records(dir.path(), 3, u64::MAX);
    assert_eq!(verify(std::slice::from_ref(&path)), Ok(8));
    let first: Value = serde_json::from_str(&lines(&path)[0]).unwrap_or_default();
    assert_eq!(first["prev_hash"], GENESIS);
    assert_eq!(first["principal"]["sub"], "alice");
    assert!(!lines(&path)[0].contains("Bearer"));
}

#[test]
fn altering_deleting_or_reordering_a_record_is_found_and_located() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_records(dir.path(), 6, u64::MAX);
    let original = lines(&path);
    let check = |l: Vec<String>| {
        std::fs::write(&path, l.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
        verify(std::slice::from_ref(&path))
    };
    let mut altered = original.clone();
    altered[2] = altered[2].replace("\"decision_id\":\"req-2\"", "\"decision_id\":\"req-9\"");
    assert_ne!(altered[2], original[2]);
    assert!(check(altered).is_err_and(|e| e.contains("line 3") && e.contains("altered")));
    let mut removed = original.clone();
    removed.remove(3);
    assert!(check(removed).is_err_and(|e| e.contains("line 4") && e.contains("removed or reordered")));
    let mut reordered = original.clone();
    reordered.swap(1, 2);
    assert!(check(reordered).is_err_and(|e| e.contains("line 2")));
    assert_eq!(check(original), Ok(6));
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_records(dir.path(), 20, 2000);
    let mut files: Vec<PathBuf> =
        (1..=5).rev().map(|n| PathBuf::from(format!("{}.{n}", path.display()))).filter(|p| p.exists()).collect();
    assert!(files.len() >= 2, "expected rotation to have happened");
    files.push(path.clone());
    let total: usize = files.iter().map(|f| lines(f).len()).sum();
    assert_eq!(verify(&files), Ok(total as u64));
    // Dropping a whole rotated file from the middle breaks the chain.
    let mut gap = files.clone();
    gap.remove(1);
    assert!(verify(&gap).is_err());
}

#[test]
fn rfc3339_is_correct() {
    assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_714_970_236)), "2026-11-26T17:42:50.236Z");
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
}

#[test]
fn a_restart_right_after_rotation_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    // Rotate on every record, so the active file is empty whenever the writer stops.
    write_records(dir.path(), 3, 1);
    assert_eq!(lines(&path).len(), 0);
    write_records(dir.path(), 2, u64::MAX);
    let mut files: Vec<PathBuf> =
        (1..=5).rev().map(|n| PathBuf::from(format!("{}.{n}", path.display()))).filter(|p| p.exists()).collect();
    files.push(path);
    assert_eq!(verify(&files), Ok(5));
}
