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

/// How deep lists and objects may nest in an argument (MLflow's inputs nest two levels).
const MAX_VALUE_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Punct(&'static str),
    Name(String),
    Str(String),
    Num(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Var(String),
    Scalar(Value),
    Enum,
    List(Vec<Val>),
    Object(Vec<(String, Val)>),
}

#[derive(Debug, Clone)]
struct Field {
    key: String,
    name: String,
    args: Vec<(String, Val)>,
    selections: Vec<Selection>,
}

#[derive(Debug, Clone)]
enum Selection {
    Field(Field),
    Fragment,
}

struct Operation {
    defaults: Map<String, Value>,
    selections: Vec<Selection>,
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
    let operations = Parser { toks: lex(query)?, at: 0 }.document()?;
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

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn expect(&mut self, p: &str) -> Result<(), Refusal> {
        match self.next() {
            Some(Tok::Punct(q)) if q == p => Ok(()),
            other => invalid(format!("expected {p:?}, found {other:?}")),
        }
    }

    fn name(&mut self) -> Result<String, Refusal> {
        match self.next() {
            Some(Tok::Name(n)) => Ok(n),
            other => invalid(format!("expected a name, found {other:?}")),
        }
    }

    fn document(&mut self) -> Result<Vec<Operation>, Refusal> {
        let mut ops = Vec::new();
        while let Some(t) = self.peek().cloned() {
            match t {
                Tok::Punct("{") => ops.push(Operation { defaults: Map::new(), selections: self.selection_set()? }),
                Tok::Name(kw) if kw == "query" || kw == "mutation" => {
                    self.at += 1;
                    if matches!(self.peek(), Some(Tok::Name(_))) {
                        self.at += 1;
                    }
                    let defaults = if self.is("(") { self.variable_definitions()? } else { Map::new() };
                    self.directives()?;
                    ops.push(Operation { defaults, selections: self.selection_set()? });
                }
                Tok::Name(kw) if kw == "fragment" => {
                    // Fragment definitions are parsed, but a spread of one in a checked field is refused.
                    self.at += 1;
                    self.name()?;
                    if self.name()? != "on" {
                        return invalid("a fragment needs a type condition");
                    }
                    self.name()?;
                    self.directives()?;
                    self.selection_set()?;
                }
                Tok::Name(kw) if kw == "subscription" => return unchecked("subscriptions are not served"),
                other => return invalid(format!("unexpected {other:?} at the top level")),
            }
        }
        if ops.is_empty() {
            return invalid("the document has no operation");
        }
        Ok(ops)
    }

    fn variable_definitions(&mut self) -> Result<Map<String, Value>, Refusal> {
        self.expect("(")?;
        let mut defaults = Map::new();
        while !self.is(")") {
            self.expect("$")?;
            let name = self.name()?;
            self.expect(":")?;
            self.type_ref()?;
            if self.is("=") {
                self.at += 1;
                let v = self.value(true, 0)?;
                defaults.insert(name, resolve(&v, &Map::new())?);
            }
            self.directives()?;
        }
        self.expect(")")?;
        Ok(defaults)
    }

    fn type_ref(&mut self) -> Result<(), Refusal> {
        if self.is("[") {
            self.at += 1;
            self.type_ref()?;
            self.expect("]")?;
        } else {
            self.name()?;
        }
        if self.is("!") {
            self.at += 1;
        }
        Ok(())
    }

    fn directives(&mut self) -> Result<(), Refusal> {
        while self.is("@") {
            self.at += 1;
            self.name()?;
            if self.is("(") {
                self.arguments()?;
            }
        }
        Ok(())
    }

    fn arguments(&mut self) -> Result<Vec<(String, Val)>, Refusal> {
        self.expect("(")?;
        let mut args = Vec::new();
        while !self.is(")") {
            let name = self.name()?;
            self.expect(":")?;
            if args.iter().any(|(k, _)| *k == name) {
                return invalid(format!("the argument {name:?} is given twice"));
            }
            let value = self.value(false, 0)?;
            args.push((name, value));
        }
        self.expect(")")?;
        Ok(args)
    }

    fn value(&mut self, constant: bool, depth: usize) -> Result<Val, Refusal> {
        if depth > MAX_VALUE_DEPTH {
            return invalid(format!("a value nests more than {MAX_VALUE_DEPTH} lists or objects"));
        }
        match self.next() {
            Some(Tok::Punct("$")) if !constant => Ok(Val::Var(self.name()?)),
            Some(Tok::Str(s)) => Ok(Val::Scalar(Value::String(s))),
            Some(Tok::Num(n)) => {
                Ok(Val::Scalar(n.parse::<serde_json::Number>().map(Value::Number).unwrap_or(Value::Null)))
            }
            Some(Tok::Name(n)) => Ok(match n.as_str() {
                "true" => Val::Scalar(Value::Bool(true)),
                "false" => Val::Scalar(Value::Bool(false)),
                "null" => Val::Scalar(Value::Null),
                _ => Val::Enum,
            }),
            Some(Tok::Punct("[")) => {
                let mut items = Vec::new();
                while !self.is("]") {
                    items.push(self.value(constant, depth + 1)?);
                }
                self.expect("]")?;
                Ok(Val::List(items))
            }
            Some(Tok::Punct("{")) => {
                let mut fields = Vec::new();
                while !self.is("}") {
                    let k = self.name()?;
                    self.expect(":")?;
                    fields.push((k, self.value(constant, depth + 1)?));
                }
                self.expect("}")?;
                Ok(Val::Object(fields))
            }
            other => invalid(format!("expected a value, found {other:?}")),
        }
    }

    fn selection_set(&mut self) -> Result<Vec<Selection>, Refusal> {
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.is("}") {
            if self.is("...") {
                self.at += 1;
                if matches!(self.peek(), Some(Tok::Name(n)) if n == "on") {
                    self.at += 2;
                }
                if matches!(self.peek(), Some(Tok::Name(_))) {
                    self.at += 1;
                }
                self.directives()?;
                if self.is("{") {
                    self.selection_set()?;
                }
                out.push(Selection::Fragment);
                continue;
            }
            let first = self.name()?;
            let (key, name) = if self.is(":") {
                self.at += 1;
                (first, self.name()?)
            } else {
                (first.clone(), first)
            };
            let args = if self.is("(") { self.arguments()? } else { Vec::new() };
            self.directives()?;
            let selections = if self.is("{") { self.selection_set()? } else { Vec::new() };
            out.push(Selection::Field(Field { key, name, args, selections }));
        }
        self.expect("}")?;
        Ok(out)
    }
}

/// GraphQL's lexical grammar with string values decoded.
fn lex(query: &str) -> Result<Vec<Tok>, Refusal> {
    let mut toks = Vec::new();
    let mut chars = query.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => {}
            '#' => while chars.next_if(|(_, c)| *c != '\n' && *c != '\r').is_some() {},
            '.' => {
                if query.get(i..i + 3) != Some("...") {
                    return invalid(format!("unexpected \".\" at byte {i}"));
                }
                chars.next();
                chars.next();
                toks.push(Tok::Punct("..."));
            }
            '{' | '}' | '(' | ')' | '[' | ']' | ':' | '!' | '$' | '=' | '@' | '|' | '&' => {
                let p = ["{", "}", "(", ")", "[", "]", ":", "!", "$", "=", "@", "|", "&"]
                    .into_iter()
                    .find(|p| p.starts_with(c))
                    .unwrap_or("?");
                toks.push(Tok::Punct(p));
            }
            '"' if query.get(i..i + 3) == Some("\"\"\"") => {
                chars.next();
                chars.next();
                let start = i + 3;
                let Some(len) = query.get(start..).and_then(|rest| rest.find("\"\"\"")) else {
                    return invalid("an unterminated block string");
                };
                toks.push(Tok::Str(query.get(start..start + len).unwrap_or("").to_string()));
                while chars.next_if(|(j, _)| *j < start + len + 3).is_some() {}
            }
            '"' => toks.push(Tok::Str(string(&mut chars)?)),
            '-' | '0'..='9' => {
                let mut end = i + c.len_utf8();
                while let Some((j, d)) =
                    chars.next_if(|(_, d)| d.is_ascii_alphanumeric() || matches!(d, '.' | '+' | '-'))
                {
                    end = j + d.len_utf8();
                }
                toks.push(Tok::Num(query.get(i..end).unwrap_or("").to_string()));
            }
            '_' | 'a'..='z' | 'A'..='Z' => {
                let mut end = i + 1;
                while let Some((j, d)) = chars.next_if(|(_, d)| d.is_ascii_alphanumeric() || *d == '_') {
                    end = j + d.len_utf8();
                }
                toks.push(Tok::Name(query.get(i..end).unwrap_or("").to_string()));
            }
            _ => return invalid(format!("unexpected character at byte {i}")),
        }
    }
    Ok(toks)
}

/// A string value after its opening quote, decoded.
fn string(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Result<String, Refusal> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None | Some((_, '\n' | '\r')) => return invalid("an unterminated string"),
            Some((_, '"')) => return Ok(out),
            Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) => out.push(c),
                        None => return invalid("a bad \\u escape"),
                    }
                }
                _ => return invalid("a bad escape"),
            },
            Some((_, c)) => out.push(c),
        }
    }
}

#[cfg(test)]
#[path = "graphql_checked_tests.rs"]
mod tests;
