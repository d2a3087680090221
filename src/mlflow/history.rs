//! The registry's history, state side (a leaf of the route layer, like `workflow`): every stage change and alias
//! move the gate lets through is stamped on the version as ONE reserved tag per entry,
//! `mlflow_gate.history.<at>-<id>`, written by a single set-tag. Replicas never read, append and write back a
//! shared list, so two gates changing one version at once both keep their entry. Versions stamped before this
//! representation carry the list tag `mlflow_gate.stage_history`, which is still read. From the entries of a
//! model's versions, [`timeline`] rebuilds which version held each stage and governed alias, from when to when,
//! who moved it, under which decision, and whether it was break-glass.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::stamps::STAGE_HISTORY;

/// Prefix of the per-entry history tags.
pub const HISTORY_PREFIX: &str = "mlflow_gate.history.";

/// The tag key of a new entry: sortable by time, unique by a random id.
pub fn entry_key(at_ms: u64) -> String {
    format!("{HISTORY_PREFIX}{at_ms:013}-{:016x}", rand::random::<u64>())
}

/// Every history entry of a version (its tags as `{key: value}`), from both representations, oldest first.
pub fn entries(tags: &Map<String, Value>) -> Vec<Value> {
    let mut list: Vec<Value> = tags
        .get(STAGE_HISTORY)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default();
    let mut keyed: Vec<(&String, Value)> = tags
        .iter()
        .filter(|(k, _)| k.starts_with(HISTORY_PREFIX))
        .filter_map(|(k, v)| Some((k, serde_json::from_str::<Value>(v.as_str()?).ok().filter(Value::is_object)?)))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(b.0));
    list.extend(keyed.into_iter().map(|(_, v)| v));
    list.sort_by_key(at);
    list
}

fn at(e: &Value) -> u64 {
    e.get("at").and_then(Value::as_u64).unwrap_or(0)
}

fn text(e: &Value, k: &str) -> Option<String> {
    e.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// One tenure: `version` held `name` (a stage or an alias) from `from` until `until` (`None`: still holds it, as
/// far as the gate recorded).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    /// `stage` or `alias`.
    pub kind: &'static str,
    /// The stage or alias.
    pub name: String,
    /// The version that held it.
    pub version: String,
    /// Since (ms since the epoch).
    pub from: u64,
    /// Until (ms since the epoch).
    pub until: Option<u64>,
    /// Who moved it there.
    pub by: Option<String>,
    /// The gate's decision (request) id of the move.
    pub decision_id: Option<String>,
    /// Whether the move was an on-call break-glass action.
    pub break_glass: bool,
    /// Who ended the tenure (moved the alias elsewhere, deleted it, or moved the version out of the stage).
    pub ended_by: Option<String>,
    /// The decision id that ended it.
    pub ended_decision_id: Option<String>,
}

/// Rebuilds the tenures from the entries of every version of one model: `(version, entries)`.
pub fn timeline(versions: &[(String, Vec<Value>)]) -> Vec<Period> {
    let mut all: Vec<(String, &Value)> =
        versions.iter().flat_map(|(v, es)| es.iter().map(move |e| (v.clone(), e))).collect();
    all.sort_by_key(|(_, e)| (at(e), text(e, "request_id")));
    let mut periods: Vec<Period> = Vec::new();
    for (version, e) in all {
        let when = at(e);
        let end = |p: &mut Period| {
            p.until = Some(when);
            p.ended_by = text(e, "by");
            p.ended_decision_id = text(e, "request_id");
        };
        let (kind, name) = match (text(e, "alias"), text(e, "stage")) {
            (Some(a), _) => ("alias", a),
            (None, Some(s)) => ("stage", s),
            _ => continue,
        };
        let open = |p: &Period| p.until.is_none();
        if kind == "alias" {
            // An alias has one holder: a move or a deletion ends the open tenure, wherever it is.
            for p in periods.iter_mut().filter(|p| p.kind == "alias" && p.name == name && open(p)) {
                end(p);
            }
            if e.get("removed").and_then(Value::as_bool) == Some(true) {
                continue;
            }
        } else {
            // A version is in one stage; archive_existing_versions ends the other holders of the new stage.
            let archive = e.get("archive_existing").and_then(Value::as_bool) == Some(true);
            for p in periods.iter_mut().filter(|p| p.kind == "stage" && open(p)) {
                if p.version == version || (archive && p.name == name) {
                    end(p);
                }
            }
            if name == "None" {
                continue;
            }
        }
        periods.push(Period {
            kind,
            name,
            version,
            from: when,
            until: None,
            by: text(e, "by"),
            decision_id: text(e, "request_id"),
            break_glass: e.get("break_glass").and_then(Value::as_bool) == Some(true),
            ended_by: None,
            ended_decision_id: None,
        });
    }
    periods
}

/// Which tenures to show.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only this alias (compared folded).
    pub alias: Option<String>,
    /// Only this stage.
    pub stage: Option<String>,
    /// Only tenures that lasted until this time or later (ms).
    pub since: Option<u64>,
    /// Only tenures in force at this time (ms): "what was serving at T".
    pub at: Option<u64>,
}

impl Query {
    /// Whether a tenure is selected.
    pub fn selects(&self, p: &Period) -> bool {
        let name = |want: &Option<String>, kind: &str, folded: bool| match want {
            None => true,
            Some(w) if folded => p.kind == kind && crate::fold::fold(w) == crate::fold::fold(&p.name),
            Some(w) => p.kind == kind && w.eq_ignore_ascii_case(&p.name),
        };
        let kinds = match (&self.alias, &self.stage) {
            (None, None) => true,
            (a, s) => (a.is_some() && name(a, "alias", true)) || (s.is_some() && name(s, "stage", false)),
        };
        let since = self.since.is_none_or(|t| p.until.is_none_or(|u| u >= t));
        let at = self.at.is_none_or(|t| p.from <= t && p.until.is_none_or(|u| u > t));
        kinds && since && at
    }
}

/// The JSON answer: `{"name", "periods": [...], "versions_read"}`, and with `entries` each version's raw entries
/// (`"versions": [{"version", "entries"}]`, for a client that merges other sources, e.g. the audit log).
pub fn answer(name: &str, versions: &[(String, Vec<Value>)], q: &Query, entries: bool) -> Value {
    let periods = timeline(versions);
    let selected: Vec<&Period> = periods.iter().filter(|p| q.selects(p)).collect();
    let mut a = json!({"name": name, "periods": selected, "versions_read": versions.len()});
    if entries {
        a["versions"] = versions.iter().map(|(v, es)| json!({"version": v, "entries": es})).collect();
    }
    a
}

/// The history entry an audit record proves, if any: an allowed stage transition or alias move of model `name`
/// that MLflow confirmed (the audit log has no version for an alias deletion, so those come from the stamps only).
pub fn entry_from_audit(record: &Value, name: &str) -> Option<(String, Value)> {
    let rpc = record.pointer("/operation/rpc")?.as_str()?;
    let target = record.get("target")?;
    let confirmed = record.get("upstream_status").and_then(Value::as_u64).is_some_and(|s| (200..300).contains(&s));
    if record.get("allow") != Some(&Value::Bool(true)) || !confirmed || target.get("name")?.as_str()? != name {
        return None;
    }
    let version = match target.get("version")? {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut e = json!({"by": record.pointer("/principal/sub"), "at": parse_time(record.get("time")?.as_str()?)?,
        "request_id": record.get("decision_id"), "break_glass": record.get("break_glass") == Some(&Value::Bool(true)),
        "source": "audit"});
    match rpc {
        "TransitionModelVersionStage" => {
            e["stage"] = target.get("stage")?.clone();
            e["archive_existing"] = Value::Bool(target.get("archive_existing_versions") == Some(&Value::Bool(true)));
        }
        "SetRegisteredModelAlias" => e["alias"] = target.get("alias")?.clone(),
        _ => return None,
    }
    Some((version, e))
}

/// Adds the audit log's entries that the stamps lack (matched by decision id) to `versions`.
pub fn merge_audit(versions: &mut Vec<(String, Vec<Value>)>, records: &[Value], name: &str) -> usize {
    let known: std::collections::HashSet<String> =
        versions.iter().flat_map(|(_, es)| es.iter().filter_map(|e| text(e, "request_id"))).collect();
    let mut added = 0;
    for (version, e) in records.iter().filter_map(|r| entry_from_audit(r, name)) {
        if text(&e, "request_id").is_some_and(|id| known.contains(&id)) {
            continue;
        }
        match versions.iter_mut().find(|(v, _)| *v == version) {
            Some((_, es)) => es.push(e),
            None => versions.push((version, vec![e])),
        }
        added += 1;
    }
    added
}

/// One line per tenure, for people: what, which version, from, until, by whom, decision, break-glass.
pub fn render(periods: &[Period]) -> String {
    let time = |ms: u64| crate::audit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let mut out = String::new();
    for p in periods {
        let until = p.until.map_or_else(|| "now".to_string(), time);
        let ended = p.ended_by.as_deref().map(|b| format!(" (ended by {b})")).unwrap_or_default();
        out.push_str(&format!(
            "{} {} version {} from {} until {}{} by {} decision {}{}\n",
            p.kind,
            p.name,
            p.version,
            time(p.from),
            until,
            ended,
            p.by.as_deref().unwrap_or("?"),
            p.decision_id.as_deref().unwrap_or("?"),
            if p.break_glass { " BREAK-GLASS" } else { "" },
        ));
    }
    out
}

/// A time given as milliseconds since the epoch or as RFC 3339 in UTC (`2026-11-29T09:30:00Z`, fractions allowed).
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms_frac: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = u64::try_from(crate::audit::days_from_civil(y, m, day)).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms_frac)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
