//! Classification, for `/graphql`: the query's size and shape are checked before MLflow parses it, because MLflow's
//! own limits (depth 10, 1,000 selections, 10 root fields, 10 aliases per level, in `graphql_no_batching.py`) run
//! only after graphql-core has parsed the whole document, and parsing a large query costs seconds of CPU. A small
//! lexer is enough: the limits below never refuse a query MLflow's counting accepts, except that the gate counts
//! an inline fragment's braces as a level (MLflow merges them into the parent level).

use std::collections::HashMap;

use serde_json::{Map, Value};

#[path = "graphql_checked.rs"]
mod checked;
pub use checked::{objects, Refusal};

/// Longest `query` string accepted (bytes). MLflow's UI sends queries of a few KiB.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Most tokens in a query.
pub const MAX_TOKENS: usize = 4_000;
/// MLflow's depth limit: nested selection sets, fragments expanded.
pub const MAX_DEPTH: usize = 10;
/// MLflow's limit on selected fields, fragments expanded.
pub const MAX_SELECTIONS: usize = 1_000;
/// MLflow's default limit on root fields (`MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS`).
pub const MAX_ROOT_FIELDS: usize = 10;
/// MLflow's default limit on aliases in one selection set (`MLFLOW_SERVER_GRAPHQL_MAX_ALIASES`).
pub const MAX_ALIASES: usize = 10;

/// Why a GraphQL request was refused; the message is shown to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("GraphQL: {0}")]
pub struct QueryError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

/// Checks the `query` of a GraphQL request body.
pub fn check_body(body: &Map<String, Value>) -> Result<(), QueryError> {
    match body.get("query") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(query)) => check_query(query),
        Some(_) => refuse("\"query\" must be a string"),
    }
}

/// One top-level definition (an operation or a fragment) as the lexer saw it.
#[derive(Default)]
struct Definition {
    fragment: Option<String>,
    max_depth: usize,
    fields: usize,
    /// Fragment spreads with the brace depth they appear at.
    spreads: Vec<(String, usize)>,
}

/// Checks a GraphQL document's size, depth, selections, root fields and aliases.
pub fn check_query(query: &str) -> Result<(), QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return refuse(format!("the query is {} bytes; mlflow-gate accepts at most {MAX_QUERY_BYTES}", query.len()));
    }
    let definitions = scan(query)?;
    let fragments: HashMap<&str, &Definition> =
        definitions.iter().filter_map(|d| d.fragment.as_deref().map(|name| (name, d))).collect();
    let mut known = HashMap::new();
    for def in definitions.iter().filter(|d| d.fragment.is_none()) {
        let (depth, selections) = expand(def, &fragments, &mut known, &mut Vec::new())?;
        if depth > MAX_DEPTH {
            return refuse(format!("the query nests {depth} levels deep; the limit is {MAX_DEPTH}"));
        }
        if selections > MAX_SELECTIONS {
            return refuse(format!("the query selects more than {MAX_SELECTIONS} fields"));
        }
    }
    Ok(())
}

/// Depth and selected fields of a definition with its fragment spreads expanded, each fragment computed once
/// (`known`). Cycles are refused (GraphQL validation refuses them too).
fn expand<'a>(
    def: &'a Definition,
    fragments: &HashMap<&'a str, &'a Definition>,
    known: &mut HashMap<&'a str, (usize, usize)>,
    path: &mut Vec<&'a str>,
) -> Result<(usize, usize), QueryError> {
    let (mut depth, mut selections) = (def.max_depth, def.fields);
    for (name, at) in &def.spreads {
        let name = name.as_str();
        if path.contains(&name) {
            return refuse(format!("the fragment {name:?} spreads itself"));
        }
        let Some(fragment) = fragments.get(name) else { continue };
        let (inner_depth, inner_selections) = match known.get(name) {
            Some(seen) => *seen,
            None => {
                path.push(name);
                let found = expand(fragment, fragments, known, path)?;
                path.pop();
                known.insert(name, found);
                found
            }
        };
        depth = depth.max(at + inner_depth.saturating_sub(1));
        selections = selections.saturating_add(inner_selections);
    }
    Ok((depth, selections))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Punct(&'a str),
    Name(&'a str),
    Value,
}

/// Cuts the query into definitions, counting braces, fields, aliases and spreads.
fn scan(query: &str) -> Result<Vec<Definition>, QueryError> {
    let tokens = lex(query)?;
    let mut definitions: Vec<Definition> = Vec::new();
    let mut current = Definition::default();
    let (mut braces, mut parens) = (0usize, 0usize);
    // Aliases per open selection set, and root fields of the current operation.
    let mut aliases: Vec<usize> = Vec::new();
    let mut root_fields = 0;
    for (i, token) in tokens.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|p| tokens.get(p));
        let next = tokens.get(i + 1);
        match token {
            Token::Punct("{") => {
                braces += 1;
                current.max_depth = current.max_depth.max(braces);
                if braces > MAX_DEPTH + 1 {
                    return refuse(format!("the query nests more than {MAX_DEPTH} levels deep"));
                }
                aliases.push(0);
            }
            Token::Punct("}") => {
                braces = braces.checked_sub(1).ok_or_else(|| QueryError("unbalanced braces".into()))?;
                aliases.pop();
                if braces == 0 {
                    definitions.push(std::mem::take(&mut current));
                    root_fields = 0;
                }
            }
            Token::Punct("(") => parens += 1,
            Token::Punct(")") => {
                parens = parens.checked_sub(1).ok_or_else(|| QueryError("unbalanced parentheses".into()))?;
            }
            Token::Name(name) if braces == 0 && previous == Some(&Token::Name("fragment")) => {
                current.fragment = Some((*name).to_string());
            }
            Token::Name(name) if braces > 0 && parens == 0 => {
                if previous == Some(&Token::Punct("...")) {
                    if *name != "on" {
                        current.spreads.push(((*name).to_string(), braces));
                    }
                } else if matches!(previous, Some(Token::Name("on")) | Some(Token::Punct("@"))) {
                    // A type condition or a directive, not a field.
                } else if next == Some(&Token::Punct(":")) {
                    let count = aliases.last_mut().map(|n| {
                        *n += 1;
                        *n
                    });
                    if count.unwrap_or(0) > MAX_ALIASES {
                        return refuse(format!("a selection set has more than {MAX_ALIASES} aliases"));
                    }
                } else {
                    current.fields += 1;
                    if braces == 1 && current.fragment.is_none() {
                        root_fields += 1;
                        if root_fields > MAX_ROOT_FIELDS {
                            return refuse(format!("the query has more than {MAX_ROOT_FIELDS} root fields"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if braces != 0 || parens != 0 {
        return refuse("unbalanced braces or parentheses");
    }
    Ok(definitions)
}

/// GraphQL's lexical grammar, enough to count: punctuators, names, and values (numbers, strings) as one token.
fn lex(query: &str) -> Result<Vec<Token<'_>>, QueryError> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let start = i;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while bytes.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    i += 1;
                }
            }
            b'.' if bytes.get(i..i + 3) == Some(b"...") => {
                i += 3;
                tokens.push(Token::Punct("..."));
            }
            b'{' | b'}' | b'(' | b')' | b'[' | b']' | b':' | b'!' | b'$' | b'=' | b'@' | b'|' | b'&' => {
                i += 1;
                tokens.push(Token::Punct(query.get(start..i).unwrap_or("")));
            }
            b'"' if bytes.get(i..i + 3) == Some(b"\"\"\"") => {
                i += 3;
                loop {
                    match bytes.get(i) {
                        None => return refuse("an unterminated block string"),
                        Some(b'\\') if bytes.get(i + 1..i + 4) == Some(b"\"\"\"") => i += 4,
                        Some(b'"') if bytes.get(i..i + 3) == Some(b"\"\"\"") => break i += 3,
                        Some(_) => i += 1,
                    }
                }
                tokens.push(Token::Value);
            }
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') | Some(b'\r') => return refuse("an unterminated string"),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break i += 1,
                        Some(_) => i += 1,
                    }
                }
                tokens.push(Token::Value);
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-')) {
                    i += 1;
                }
                tokens.push(Token::Value);
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    i += 1;
                }
                tokens.push(Token::Name(query.get(start..i).unwrap_or("")));
            }
            _ if query.get(i..).is_some_and(|rest| rest.starts_with('\u{feff}')) => i += 3,
            _ => return refuse(format!("unexpected character at byte {i}")),
        }
        if tokens.len() > MAX_TOKENS {
            return refuse(format!("the query has more than {MAX_TOKENS} tokens"));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        let mut q = String::from("query Q ");
        for i in 0..levels {
            q.push_str(&format!("{{ f{i} "));
        }
        q.push_str(&"}".repeat(levels));
        q
    }

    #[test]
    fn ordinary_queries_pass() {
        let q = r#"query MlflowGetRun($data: MlflowGetRunInput!) {
            # a comment { with braces
            mlflowGetRun(input: $data) { run { info { runId status } data { metrics { key value } } ...Extra } }
        }
        fragment Extra on MlflowRun { modelVersions { name version } }"#;
        assert_eq!(check_query(q), Ok(()));
        assert_eq!(check_query(&nested(MAX_DEPTH)), Ok(()));
        let aliased =
            format!("{{ {} }}", (0..MAX_ALIASES).map(|i| format!("a{i}: test")).collect::<Vec<_>>().join(" "));
        assert_eq!(check_query(&aliased), Ok(()));
        assert_eq!(check_query(r#"{ test(inputString: "}}}{{{ \" ") }"#), Ok(()));
    }

    #[test]
    fn deep_long_or_wide_queries_are_refused() {
        assert!(check_query(&nested(MAX_DEPTH + 1)).is_err_and(|e| e.0.contains("levels deep")));
        let long = format!("{{ test(inputString: \"{}\") }}", "x".repeat(MAX_QUERY_BYTES));
        assert!(check_query(&long).is_err_and(|e| e.0.contains("bytes")));
        let aliased =
            format!("{{ {} }}", (0..=MAX_ALIASES).map(|i| format!("a{i}: test")).collect::<Vec<_>>().join(" "));
        assert!(check_query(&aliased).is_err_and(|e| e.0.contains("aliases")));
        let roots = format!("{{ {} }}", (0..=MAX_ROOT_FIELDS).map(|i| format!("f{i}")).collect::<Vec<_>>().join(" "));
        assert!(check_query(&roots).is_err_and(|e| e.0.contains("root fields")));
        let tokens = format!("{{ f {} }}", "[".repeat(MAX_TOKENS));
        assert!(check_query(&tokens).is_err());
    }

    #[test]
    fn fragments_count_as_expanded() {
        // Depth hidden in fragments: 6 braces in the operation + a fragment 6 deep = 11 levels.
        let q = format!(
            "{} fragment F on T {}",
            nested(5).replace("f4 ", "f4 { ...F }"),
            nested(6).replace("query Q ", "")
        );
        assert!(check_query(&q).is_err_and(|e| e.0.contains("levels deep")), "{q}");
        // Selections multiplied by nested spreads: 2^11 fields.
        let mut q = String::from("{ a { ...F10 } } fragment F0 on T { x y }");
        for i in 1..=10 {
            q.push_str(&format!(" fragment F{i} on T {{ ...F{p} ...F{p} }}", p = i - 1));
        }
        assert!(check_query(&q).is_err_and(|e| e.0.contains("fields")), "{q}");
        assert!(check_query("{ a { ...F } } fragment F on T { ...F }").is_err_and(|e| e.0.contains("itself")));
        // Many levels of many spreads of empty fragments: each fragment is expanded once, so this is cheap.
        let mut q = String::from("{ a { ...F300 } } fragment F0 on T { x }");
        for i in 1..=300 {
            q.push_str(&format!(" fragment F{i} on T {{ ...F{p} ...F{p} ...F{p} }}", p = i - 1));
        }
        assert!(check_query(&q).is_err());
    }

    #[test]
    fn the_query_must_be_a_string() {
        let body = serde_json::json!({"query": {"nested": true}});
        assert!(check_body(body.as_object().unwrap_or(&Map::new())).is_err());
        let body = serde_json::json!({"operationName": "x"});
        assert_eq!(check_body(body.as_object().unwrap_or(&Map::new())), Ok(()));
    }
}
