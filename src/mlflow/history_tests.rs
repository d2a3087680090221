use super::*;

fn tags(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), Value::String(v.to_string()))).collect()
}

fn alias(a: &str, by: &str, at: u64, id: &str) -> Value {
    json!({"alias": a, "by": by, "at": at, "request_id": id})
}

fn stage(s: &str, by: &str, at: u64, id: &str, archive: bool) -> Value {
    json!({"stage": s, "by": by, "at": at, "request_id": id, "archive_existing": archive})
}

#[test]
fn entries_are_read_from_both_representations_in_time_order() {
    let old = json!([{"stage": "Staging", "by": "ci", "at": 1}, {"alias": "champion", "by": "ci", "at": 5}]);
    let t = tags(&[
        (STAGE_HISTORY, old),
        ("mlflow_gate.history.0000000000003-aa", json!({"stage": "Production", "by": "ci", "at": 3})),
        ("mlflow_gate.history.0000000000007-bb", json!({"alias": "champion", "by": "carol", "at": 7})),
        ("mlflow_gate.history.0000000000008-cc", json!("not an entry")),
        ("team", json!("fraud")),
    ]);
    let ats: Vec<u64> = entries(&t).iter().map(at).collect();
    assert_eq!(ats, [1, 3, 5, 7]);
}

#[test]
fn entry_keys_are_unique_and_sort_by_time() {
    let (a, b) = (entry_key(5), entry_key(5));
    assert_ne!(a, b);
    assert!(entry_key(40) > entry_key(5));
    assert!(a.starts_with("mlflow_gate.history.0000000000005-"));
}

#[test]
fn alias_tenures_end_when_the_alias_moves_or_is_deleted() {
    let versions = vec![
        ("1".to_string(), vec![alias("champion", "ci", 10, "d1"), alias("champion", "carol", 30, "d3")]),
        ("2".to_string(), vec![alias("champion", "ci", 20, "d2")]),
    ];
    let mut removed = versions.clone();
    removed[0].1.push(json!({"alias": "champion", "by": "root", "at": 40, "request_id": "d4", "removed": true}));
    let p = timeline(&versions);
    let rows: Vec<(&str, u64, Option<u64>, Option<&str>)> =
        p.iter().map(|p| (p.version.as_str(), p.from, p.until, p.ended_by.as_deref())).collect();
    assert_eq!(rows, [("1", 10, Some(20), Some("ci")), ("2", 20, Some(30), Some("carol")), ("1", 30, None, None)]);
    let p = timeline(&removed);
    assert_eq!(p.last().map(|p| (p.until, p.ended_decision_id.clone())), Some((Some(40), Some("d4".into()))));
    assert_eq!(p.len(), 3);
}

#[test]
fn stage_tenures_end_on_the_next_move_and_on_archiving() {
    let versions = vec![
        ("1".to_string(), vec![stage("Staging", "ci", 1, "a", false), stage("Production", "ci", 2, "b", true)]),
        ("2".to_string(), vec![stage("Staging", "ci", 3, "c", false), stage("Production", "ci", 4, "d", true)]),
    ];
    let p = timeline(&versions);
    let rows: Vec<(&str, &str, u64, Option<u64>)> =
        p.iter().map(|p| (p.version.as_str(), p.name.as_str(), p.from, p.until)).collect();
    assert_eq!(
        rows,
        [
            ("1", "Staging", 1, Some(2)),
            ("1", "Production", 2, Some(4)),
            ("2", "Staging", 3, Some(4)),
            ("2", "Production", 4, None)
        ]
    );
}

#[test]
fn break_glass_and_decision_ids_are_kept() {
    let mut e = alias("champion", "carol", 9, "d9");
    e["break_glass"] = json!(true);
    let p = timeline(&[("1".to_string(), vec![e])]);
    assert!(p[0].break_glass);
    assert_eq!(p[0].decision_id.as_deref(), Some("d9"));
}

#[test]
fn queries_select_by_alias_stage_since_and_at() {
    let versions = vec![
        ("1".to_string(), vec![alias("champion", "ci", 10, "d1"), stage("Staging", "ci", 12, "s", false)]),
        ("2".to_string(), vec![alias("champion", "ci", 20, "d2"), alias("challenger", "alice", 5, "c")]),
    ];
    let p = timeline(&versions);
    let pick = |q: Query| -> Vec<(String, String)> {
        p.iter().filter(|x| q.selects(x)).map(|x| (x.name.clone(), x.version.clone())).collect()
    };
    let champion = Query { alias: Some("CHAMPION".into()), ..Query::default() };
    assert_eq!(pick(champion.clone()), [("champion".into(), "1".into()), ("champion".into(), "2".into())]);
    assert_eq!(pick(Query { at: Some(15), ..champion.clone() }), [("champion".to_string(), "1".to_string())]);
    assert_eq!(pick(Query { at: Some(20), ..champion.clone() }), [("champion".to_string(), "2".to_string())]);
    assert_eq!(pick(Query { since: Some(21), ..champion }), [("champion".to_string(), "2".to_string())]);
    assert_eq!(
        pick(Query { stage: Some("staging".into()), ..Query::default() }),
        [("Staging".to_string(), "1".to_string())]
    );
    assert_eq!(pick(Query { at: Some(9), ..Query::default() }), [("challenger".to_string(), "2".to_string())]);
}

#[test]
fn times_parse_as_milliseconds_or_rfc3339() {
    assert_eq!(parse_time("1795700000000"), Some(1_795_700_000_000));
    assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
    assert_eq!(parse_time("2026-11-29T09:30:00.25Z"), Some(1_795_944_600_250));
    let now = std::time::SystemTime::now();
    let ms = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    assert_eq!(parse_time(&crate::audit::rfc3339(now)), Some(ms));
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-11-29 09:30:00", "2026-11-29T09:30:00+02:00"] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn the_audit_log_adds_confirmed_moves_the_stamps_lack() {
    let record = |id: &str, allow: bool, status: u64, version: &str| {
        json!({"kind": "decision", "time": "1970-01-01T00:00:05Z", "decision_id": id, "principal": {"sub": "ci-bot"},
            "operation": {"rpc": "SetRegisteredModelAlias"}, "allow": allow, "upstream_status": status,
            "break_glass": false, "target": {"name": "m", "version": version, "alias": "champion"}})
    };
    let mut versions = vec![("1".to_string(), vec![alias("champion", "ci-bot", 5000, "known")])];
    let records = vec![
        record("known", true, 200, "1"),
        record("lost", true, 200, "2"),
        record("denied", false, 403, "3"),
        record("refused-by-mlflow", true, 404, "4"),
        json!({"kind": "checkpoint"}),
    ];
    assert_eq!(merge_audit(&mut versions, &records, "m"), 1);
    assert_eq!(merge_audit(&mut versions.clone(), &records, "other"), 0);
    let p = timeline(&versions);
    assert_eq!(p.iter().map(|p| p.version.as_str()).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(p[1].decision_id.as_deref(), Some("lost"));
}

#[test]
fn the_text_form_has_one_line_per_tenure() {
    let mut e = alias("champion", "carol", 1000, "d2");
    e["break_glass"] = json!(true);
    let p = timeline(&[("1".to_string(), vec![alias("champion", "ci-bot", 0, "d1")]), ("2".to_string(), vec![e])]);
    let text = render(&p);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, [
        "alias champion version 1 from 1970-01-01T00:00:00.000Z until 1970-01-01T00:00:01.000Z (ended by carol) by ci-bot decision d1",
        "alias champion version 2 from 1970-01-01T00:00:01.000Z until now by carol decision d2 BREAK-GLASS",
    ]);
}
