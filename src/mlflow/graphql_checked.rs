//! Classification, for `/graphql` under resource permissions: the gate admits only the queries it can check. The
//! document is parsed (operations, root fields, aliases, arguments, variables and their defaults); each root field
//! must be one of MLflow's whose objects the gate can name from the request (an experiment id, a run id, a list of
//! them), and those objects become the target's `objects` (each judged like its REST read, `Need::Queried`). Lists
//! in the answer that can hold objects of another owner (a run's `modelVersions`, `mlflowSearchModelVersions`,
//! `mlflowSearchRuns`' runs) are named in the target's `lists`, with the response keys leading to them and to each
//! item's id, for the response phase to cut (`pipeline::results`). Fragments inside a checked field and unknown root
//! fields are refused: the gate would not know what the answer holds.
//!
//! Root fields of MLflow 3.17.2 (`server/graphql`): `mlflowGetExperiment`, `mlflowGetRun`,
//! `mlflowGetMetricHistoryBulkInterval`, `mlflowListArtifacts`, `mlflowSearchModelVersions`, `mlflowSearchRuns`
//! (query and mutation), `mlflowSearchDatasets` (mutation), `test`, `testMutation`, and introspection.

use serde_json::{json, Map, Value};

#[path = "graphql_parse.rs"]
mod parse;
use parse::{lex, Field, Parser, Selection, Val};

/// Why a GraphQL request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The document cannot be read (400).
    Invalid(String),
    /// It asks for something the gate cannot check against resource permissions (403).
    Unchecked(String),
}

fn invalid<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Invalid(format!("GraphQL: {}", m.into())))
}

fn unchecked<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Unchecked(format!("GraphQL: {}", m.into())))
}

/// The target fields of a GraphQL body: `objects` (what each root field reads) and `lists` (what the answer's
/// lists must be cut to). The body's `query` was checked for size and depth before (`graphql::check_body`).
pub fn objects(body: Option<&Map<String, Value>>) -> Result<Map<String, Value>, Refusal> {
    let Some(query) = body.and_then(|b| b.get("query")).and_then(Value::as_str) else {
        return invalid("the request has no \"query\" string");
    };
    let variables = match body.and_then(|b| b.get("variables")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(v)) => v.clone(),
        Some(_) => return invalid("\"variables\" must be an object"),
    };
    let operations = Parser::new(lex(query)?).document()?;
    let mut out = Checked::default();
    for op in &operations {
        let mut vars = op.defaults.clone();
        vars.extend(variables.clone());
        for selection in &op.selections {
            let Selection::Field(field) = selection else {
                return unchecked("fragments at the root of an operation are not checked; name the fields");
            };
            out.root(field, &vars)?;
        }
    }
    let mut target = Map::new();
    target.insert("objects".into(), Value::Array(out.objects));
    target.insert("lists".into(), Value::Array(out.lists));
    Ok(target)
}

#[derive(Default)]
struct Checked {
    objects: Vec<Value>,
    lists: Vec<Value>,
}

impl Checked {
    fn root(&mut self, f: &Field, vars: &Map<String, Value>) -> Result<(), Refusal> {
        let input = f.args.iter().find(|(k, _)| k == "input").map(|(_, v)| resolve(v, vars)).transpose()?;
        let input = input.unwrap_or(Value::Null);
        let key = f.key.clone();
        match f.name.as_str() {
            "__typename" | "__schema" | "__type" | "test" | "testMutation" => Ok(()),
            "mlflowGetExperiment" => {
                let id = one_id(&input, &["experimentId", "experiment_id"], &f.name)?;
                no_fragments(&f.selections, &f.name)?;
                self.object("experiment", id);
                Ok(())
            }
            "mlflowGetRun" | "mlflowListArtifacts" => {
                let id = one_id(&input, &["runId", "run_id", "runUuid", "run_uuid"], &f.name)?;
                no_fragments(&f.selections, &f.name)?;
                self.object("run", id.clone());
                if f.name == "mlflowGetRun" {
                    for run in children(&f.selections, "run") {
                        if children(&run.selections, "experiment").next().is_some() {
                            self.object("run_experiment", id.clone());
                        }
                        self.versions(&run.selections, vec![key.clone(), run.key.clone()])?;
                    }
                }
                Ok(())
            }
            "mlflowGetMetricHistoryBulkInterval" => {
                for id in many_ids(&input, &["runIds", "run_ids"], &f.name)? {
                    self.object("run", id);
                }
                Ok(())
            }
            "mlflowSearchRuns" | "mlflowSearchDatasets" => {
                for id in many_ids(&input, &["experimentIds", "experiment_ids"], &f.name)? {
                    self.object("experiment", id);
                }
                no_fragments(&f.selections, &f.name)?;
                for runs in children(&f.selections, "runs") {
                    let id = id_key(&runs.selections, "info", &["runUuid", "runId"]).ok_or_else(|| {
                        Refusal::Unchecked(format!(
                            "GraphQL: {} must select runs {{ info {{ runUuid }} }} so that mlflow-gate can check each run",
                            f.name
                        ))
                    })?;
                    let path = vec![key.clone(), runs.key.clone()];
                    self.lists.push(json!({"path": path, "type": "run", "id": id}));
                    self.versions(&runs.selections, path)?;
                }
                Ok(())
            }
            "mlflowSearchModelVersions" => {
                no_fragments(&f.selections, &f.name)?;
                self.versions(&f.selections, vec![key])
            }
            other => unchecked(format!(
                "mlflow-gate cannot check the root field {other:?} against resource permissions, so it is refused; \
                 use the REST API (or mlflowGetExperiment, mlflowGetRun, mlflowSearchRuns, mlflowListArtifacts, \
                 mlflowGetMetricHistoryBulkInterval, mlflowSearchModelVersions, mlflowSearchDatasets)"
            )),
        }
    }

    fn object(&mut self, kind: &str, id: String) {
        let object = json!({"type": kind, "id": id});
        if !self.objects.contains(&object) {
            self.objects.push(object);
        }
    }

    /// A `modelVersions` list under `parent` (each version judged on its registered model, by `name`).
    fn versions(&mut self, selections: &[Selection], parent: Vec<String>) -> Result<(), Refusal> {
        for versions in children(selections, "modelVersions") {
            let Some(name) = children(&versions.selections, "name").next() else {
                return unchecked(
                    "modelVersions must select name so that mlflow-gate can check each version's registered model",
                );
            };
            let mut path = parent.clone();
            path.push(versions.key.clone());
            self.lists.push(json!({"path": path, "type": "model_version", "id": [name.key]}));
        }
        Ok(())
    }
}

/// The fields named `name` among `selections` (with their response keys).
fn children<'a>(selections: &'a [Selection], name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
    selections.iter().filter_map(move |s| match s {
        Selection::Field(f) if f.name == name => Some(f),
        _ => None,
    })
}

/// The response keys leading from a list item to its id (`info { runUuid }`).
fn id_key(selections: &[Selection], parent: &str, names: &[&str]) -> Option<Vec<String>> {
    let info = children(selections, parent).next()?;
    names.iter().find_map(|n| children(&info.selections, n).next()).map(|id| vec![info.key.clone(), id.key.clone()])
}

/// Fragments anywhere under a checked field hide what the answer holds.
fn no_fragments(selections: &[Selection], root: &str) -> Result<(), Refusal> {
    for s in selections {
        match s {
            Selection::Fragment => {
                return unchecked(format!("fragments inside {root} are not checked; name the fields instead"));
            }
            Selection::Field(f) => no_fragments(&f.selections, root)?,
        }
    }
    Ok(())
}

/// The one id an input names (MLflow reads `runId` first, then `runUuid`: two different ones are refused).
fn one_id(input: &Value, names: &[&str], root: &str) -> Result<String, Refusal> {
    let mut found: Option<String> = None;
    for name in names {
        match input.get(*name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() => match &found {
                Some(seen) if seen != s => return invalid(format!("{root} names two different objects")),
                _ => found = Some(s.clone()),
            },
            Some(Value::Number(n)) => found = Some(n.to_string()),
            Some(_) => return invalid(format!("{root}'s {name} must be a string")),
        }
    }
    found.ok_or_else(|| Refusal::Invalid(format!("GraphQL: {root} needs input.{}", names.first().unwrap_or(&"id"))))
}

/// The ids of a list input; an empty or missing list is refused (MLflow would search everything).
fn many_ids(input: &Value, names: &[&str], root: &str) -> Result<Vec<String>, Refusal> {
    let mut ids = Vec::new();
    for name in names {
        match input.get(*name) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) if !s.is_empty() => ids.push(s.clone()),
                        Value::Number(n) => ids.push(n.to_string()),
                        _ => return invalid(format!("{root}'s {name} must hold ids")),
                    }
                }
            }
            Some(Value::String(s)) => ids.push(s.clone()),
            Some(_) => return invalid(format!("{root}'s {name} must be a list of ids")),
        }
    }
    if ids.is_empty() {
        return unchecked(format!(
            "{root} must name its input.{} so that mlflow-gate can check each of them",
            names.first().unwrap_or(&"ids")
        ));
    }
    if ids.len() > super::super::permission::MAX_LISTED {
        return invalid(format!("{root} names more than {} objects", super::super::permission::MAX_LISTED));
    }
    Ok(ids)
}

/// A value with its variables substituted.
fn resolve(v: &Val, vars: &Map<String, Value>) -> Result<Value, Refusal> {
    Ok(match v {
        Val::Var(name) => vars.get(name).cloned().unwrap_or(Value::Null),
        Val::Scalar(s) => s.clone(),
        Val::Enum => Value::Null,
        Val::List(items) => Value::Array(items.iter().map(|i| resolve(i, vars)).collect::<Result<_, _>>()?),
        Val::Object(fields) => {
            let mut m = Map::new();
            for (k, val) in fields {
                if m.insert(k.clone(), resolve(val, vars)?).is_some() {
                    return invalid(format!("the input field {k:?} is given twice"));
                }
            }
            Value::Object(m)
        }
    })
}

#[cfg(test)]
#[path = "graphql_checked_tests.rs"]
mod tests;
