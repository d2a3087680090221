//! Classification, for `/graphql` under resource permissions: GraphQL's grammar, as much of it as checking needs
//! (operations with their variables' defaults, selection sets with aliases, arguments and directives; fragments are
//! recognised so that the caller can refuse them), with string values decoded. Used by `graphql_checked.rs` only.

use serde_json::{Map, Value};

use super::{invalid, resolve, unchecked, Refusal};

/// How deep lists and objects may nest in an argument (MLflow's inputs nest two levels).
pub(super) const MAX_VALUE_DEPTH: usize = 16;

/// A token: a punctuator, a name, a decoded string, or a number as written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Punct(&'static str),
    Name(String),
    Str(String),
    Num(String),
}

/// An argument value (an enum value carries nothing: no checked input reads one).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Var(String),
    Scalar(Value),
    Enum,
    List(Vec<Val>),
    Object(Vec<(String, Val)>),
}

/// A field: its response key (the alias, or its name), name, arguments and selections.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub(super) key: String,
    pub(super) name: String,
    pub(super) args: Vec<(String, Val)>,
    pub(super) selections: Vec<Selection>,
}

/// A selection: a field, or a fragment (spread or inline), whose content is not followed.
#[derive(Debug, Clone)]
pub(super) enum Selection {
    Field(Field),
    Fragment,
}

/// An operation: its variables' default values and its root selections.
pub(super) struct Operation {
    pub(super) defaults: Map<String, Value>,
    pub(super) selections: Vec<Selection>,
}

/// A recursive-descent parser over the tokens.
pub(super) struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    pub(super) fn new(toks: Vec<Tok>) -> Parser {
        Parser { toks, at: 0 }
    }

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

    pub(super) fn document(&mut self) -> Result<Vec<Operation>, Refusal> {
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
pub(super) fn lex(query: &str) -> Result<Vec<Tok>, Refusal> {
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
