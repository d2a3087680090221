//! Policy, start-up and reload side: reading a policy directory into a compiled, warmed and self-tested regorus
//! engine. A bundle that fails to load, or whose entrypoint errors on a sample input, is refused with the file (and,
//! for Rego, the line) at fault.
//!
//! Requests are evaluated on regorus' bytecode VM (RVM) when the bundle compiles to it, which is several times
//! faster than the tree-walking interpreter; the interpreter stays the reference. At every load the VM's result is
//! compared with the interpreter's on every sample input, and any difference, or a bundle the bytecode compiler
//! does not accept, keeps that bundle on the interpreter (logged). `[policy] engine = "interpreter"` forces it.

use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use sha2::{Digest, Sha256};

use super::{samples, worker, EvalError};

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory or a file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// File or directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// A Rego or data file does not compile or load (regorus' message carries the line).
    #[error("{path}: {message}")]
    Compile {
        /// File at fault.
        path: String,
        /// regorus' message.
        message: String,
    },
    /// The entrypoint failed on a sample input.
    #[error("policy self-test failed: evaluating {entrypoint} on a sample request: {message}")]
    SelfTest {
        /// The entrypoint.
        entrypoint: String,
        /// What went wrong.
        message: String,
    },
}

impl BundleError {
    /// The file or directory at fault, when one is.
    pub fn file(&self) -> Option<&str> {
        match self {
            BundleError::Io { path, .. } | BundleError::Compile { path, .. } => Some(path),
            BundleError::SelfTest { .. } => None,
        }
    }

    /// The line at fault, read from regorus' `file:line:column` prefix.
    pub fn line(&self) -> Option<u32> {
        let BundleError::Compile { path, message } = self else { return None };
        let rest = message.split_once(&format!("{path}:"))?.1;
        rest.split(':').next()?.trim().parse().ok()
    }
}

/// Every bundle loaded in this process gets its own number: per-thread engines are keyed by it.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Which engine evaluates requests (`policy.engine`; defined with the config, which reads it).
pub use crate::config::EngineChoice;

/// The bundle compiled to bytecode, with the data it runs against.
pub struct Bytecode {
    /// The program (entrypoint only).
    pub program: Arc<Program>,
    /// Every data document of the bundle.
    pub data: regorus::Value,
}

/// A loaded policy bundle.
pub struct Bundle {
    engine: regorus::Engine,
    bytecode: Option<Bytecode>,
    interpreter_reason: Option<String>,
    choice: EngineChoice,
    entrypoint: String,
    revision: String,
    files: Vec<PathBuf>,
    dir: PathBuf,
    timeout: Duration,
    generation: u64,
    impure: Option<&'static str>,
    claims: Option<Arc<[String]>>,
}

impl Bundle {
    /// Loads every `*.rego` (except `*_test.rego`) and `*.json` file of `dir`, in name order, compiles, warms and
    /// self-tests the entrypoint. `timeout` bounds each evaluation.
    pub fn load(dir: &Path, entrypoint: &str, timeout: Duration) -> Result<Bundle, BundleError> {
        Bundle::load_with(dir, entrypoint, timeout, EngineChoice::Auto)
    }

    /// [`Bundle::load`] with a choice of engine for requests.
    pub fn load_with(
        dir: &Path,
        entrypoint: &str,
        timeout: Duration,
        choice: EngineChoice,
    ) -> Result<Bundle, BundleError> {
        let files = policy_files(dir, false)?;
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(timer(timeout));
        let revision = load_files(&mut engine, &files)?;
        let code = rego_code(&files)?;
        let impure = impure_builtin(&code);
        let claims = declared_claims(&engine, &code)?;
        Bundle {
            engine,
            bytecode: None,
            interpreter_reason: Some("configured: [policy] engine = \"interpreter\"".into()),
            choice,
            entrypoint: entrypoint.to_string(),
            revision,
            files,
            dir: dir.to_path_buf(),
            timeout,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            impure,
            claims,
        }
        .warm_and_self_test()
        .map(Bundle::with_bytecode)
    }

    /// The bytecode requests run on, when the bundle has it.
    pub fn bytecode(&self) -> Option<&Bytecode> {
        self.bytecode.as_ref()
    }

    /// `"bytecode"` or `"interpreter"`: the engine requests are evaluated on.
    pub fn engine_name(&self) -> &'static str {
        if self.bytecode.is_some() {
            "bytecode"
        } else {
            "interpreter"
        }
    }

    /// Why requests run on the interpreter, when they do.
    pub fn interpreter_reason(&self) -> Option<&str> {
        self.interpreter_reason.as_deref()
    }

    /// The engine choice this bundle was loaded with (reloads keep it).
    pub fn choice(&self) -> EngineChoice {
        self.choice
    }

    /// A VM ready to evaluate this bundle's bytecode with its time limit.
    pub fn new_vm(&self) -> Option<RegoVM> {
        // The data was accepted when the bundle loaded (`compile_bytecode`), so this does not fail.
        self.bytecode.as_ref().and_then(|b| vm_for(b, self.timeout).ok())
    }

    fn with_bytecode(mut self) -> Bundle {
        if self.choice == EngineChoice::Interpreter {
            return self;
        }
        match self.compile_bytecode() {
            Ok(bytecode) => {
                self.bytecode = Some(bytecode);
                self.interpreter_reason = None;
            }
            Err(reason) => {
                tracing::warn!(%reason, "policy bundle evaluated on the interpreter (slower)");
                self.interpreter_reason = Some(reason);
            }
        }
        self
    }

    /// Compiles the entrypoint to bytecode and checks that the VM yields exactly the interpreter's result on every
    /// sample input.
    fn compile_bytecode(&self) -> Result<Bytecode, String> {
        let mut engine = self.engine.clone();
        let compiled = engine
            .compile_with_entrypoint(&self.entrypoint.as_str().into())
            .map_err(|e| format!("the bundle does not compile to bytecode: {e}"))?;
        let program = Compiler::compile_from_policy(&compiled, &[&self.entrypoint])
            .map_err(|e| format!("the bundle does not compile to bytecode: {e}"))?;
        let bytecode = Bytecode { program, data: engine.get_data() };
        let mut vm = vm_for(&bytecode, self.timeout)?;
        for sample in samples::differential_inputs() {
            let mut interpreter = self.engine.clone();
            interpreter.set_input(sample.input.clone());
            let expected = catch_unwind(AssertUnwindSafe(|| interpreter.eval_rule(self.entrypoint.clone())))
                .map_err(|_| "the interpreter panicked".to_string())?
                .map_err(|e| e.to_string());
            vm.set_input(sample.input);
            let got = catch_unwind(AssertUnwindSafe(|| vm.execute()))
                .map_err(|_| "the bytecode VM panicked".to_string())?
                .map_err(|e| e.to_string());
            match (&expected, &got) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(_), Err(_)) => {}
                _ => {
                    return Err(format!(
                        "the bytecode VM and the interpreter disagree on the sample {:?}: {expected:?} vs {got:?}",
                        sample.name
                    ))
                }
            }
        }
        Ok(bytecode)
    }

    /// The warmed engine (evaluate on a clone of it).
    pub fn engine(&self) -> &regorus::Engine {
        &self.engine
    }

    /// The rule that yields the decision.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// A hash of every file of the bundle (names and contents): which policy decided.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The files that make up the bundle.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The directory the bundle was loaded from (and is reloaded from).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The wall-clock budget of one evaluation.
    pub fn eval_timeout(&self) -> Duration {
        self.timeout
    }

    /// This bundle's number, unique in the process (a reload of the same files gets a new one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The first builtin of [`IMPURE_BUILTINS`] the bundle's Rego names, if any: its decisions may then depend on
    /// more than the input document (the clock, randomness, the network), so none is answered from the decision
    /// cache.
    pub fn impure_builtin(&self) -> Option<&'static str> {
        self.impure
    }

    /// The principal as this bundle's input document shows it: with only the declared claims ([`Bundle::claims`]).
    pub fn principal_view<'a>(
        &self,
        principal: &'a crate::auth::Principal,
    ) -> std::borrow::Cow<'a, crate::auth::Principal> {
        let Some(declared) = self.claims() else { return std::borrow::Cow::Borrowed(principal) };
        let claims = super::input::declared_only(principal.claims.as_object(), declared)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        std::borrow::Cow::Owned(crate::auth::Principal {
            sub: principal.sub.clone(),
            issuer: principal.issuer.clone(),
            groups: principal.groups.clone(),
            claims: serde_json::Value::Object(claims),
            via: principal.via,
        })
    }

    /// The token claims the bundle declares it reads (`data.gate.claims`): when declared, `input.principal.claims`
    /// holds only these (see [`declared_claims`]); `None`: every verified claim.
    pub fn claims(&self) -> Option<&[String]> {
        self.claims.as_deref()
    }

    /// Evaluates the entrypoint on the sample inputs and keeps the engine that did it: regorus prepares its
    /// analysis on the first evaluation, and clones of a warmed engine skip that work. Undefined builtins, runtime
    /// errors and malformed decisions surface here, at start or reload, rather than on every request.
    fn warm_and_self_test(mut self) -> Result<Bundle, BundleError> {
        let mut warmed = self.engine.clone();
        for sample in samples::self_test_inputs() {
            match worker::evaluate_on(&mut warmed, &self.entrypoint, sample.input) {
                Ok(_) => {}
                Err(EvalError::Undefined | EvalError::Malformed(_)) if !sample.strict => {}
                Err(e) => {
                    let message = format!("{}: {e}", sample.name);
                    return Err(BundleError::SelfTest { entrypoint: self.entrypoint.clone(), message });
                }
            }
        }
        self.engine = warmed;
        Ok(self)
    }
}

/// A VM loaded with the program and data, with the wall-clock limit (the instruction limit is lifted: the time
/// limit is the one budget, as for the interpreter).
fn vm_for(bytecode: &Bytecode, timeout: Duration) -> Result<RegoVM, String> {
    let mut vm = RegoVM::new();
    vm.load_program(bytecode.program.clone());
    vm.set_data(bytecode.data.clone()).map_err(|e| format!("the bytecode VM refuses the data: {e}"))?;
    vm.set_max_instructions(usize::MAX);
    vm.set_execution_timer_config(Some(timer(timeout)));
    Ok(vm)
}

fn timer(timeout: Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig { limit: timeout, check_interval: NonZeroU32::MIN.saturating_add(63) }
}

/// Lists the policy files of a directory in name order: `*.rego` (with or without `*_test.rego`) and `*.json`.
/// Entries whose names start with `.` are skipped (Kubernetes ConfigMap mounts keep their data under `..data`);
/// symlinks are followed, so a ConfigMap's visible files count.
pub fn policy_files(dir: &Path, with_tests: bool) -> Result<Vec<PathBuf>, BundleError> {
    let io = |e: std::io::Error| BundleError::Io { path: dir.display().to_string(), message: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let is_test = name.ends_with("_test.rego");
        if (name.ends_with(".rego") && (with_tests || !is_test)) || name.ends_with(".json") {
            files.push(path);
        }
    }
    files.sort();
    if !files.iter().any(|f| f.extension().is_some_and(|e| e == "rego")) {
        return Err(BundleError::Io { path: dir.display().to_string(), message: "holds no *.rego file".into() });
    }
    Ok(files)
}

/// Builtins whose results are not a function of the input document and the bundle (the clock, randomness, the
/// network, the process), or that have effects (`print`, `trace`). A bundle whose Rego code calls one (or seems to,
/// in a string; comments do not count) is evaluated for every request: the decision cache (`super::decisions`) relies on a decision being
/// a function of the input and the bundle. (Rego calls builtins only by name, so a bundle cannot reach one of these
/// without naming it.)
pub const IMPURE_BUILTINS: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "uuid.parse",
    "http.send",
    "opa.runtime",
    "net.lookup_ip_addr",
    "io.jwt.decode_verify",
    "crypto.x509.parse_and_verify_certificates",
    "print",
    "trace",
];

/// Each `*.rego` file of the bundle with its code, comments removed: what the checks below read.
fn rego_code(files: &[PathBuf]) -> Result<Vec<(&PathBuf, String)>, BundleError> {
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rego"))
        .map(|f| Ok((f, without_comments(&read(f)?))))
        .collect()
}

/// The first of [`IMPURE_BUILTINS`] that a `*.rego` file of the bundle names.
fn impure_builtin(code: &[(&PathBuf, String)]) -> Option<&'static str> {
    code.iter().find_map(|(_, text)| IMPURE_BUILTINS.iter().find(|name| calls(text, name)).copied())
}

/// Rego source with its `#` comments removed (a `#` inside a string or a raw string is kept).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut quoted, mut raw, mut escaped, mut comment) = (false, false, false, false);
    for c in text.chars() {
        if comment {
            if c == '\n' {
                comment = false;
                out.push(c);
            }
            continue;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !raw => quoted = !quoted,
            '`' if !quoted => raw = !raw,
            '#' if !quoted && !raw => {
                comment = true;
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Whether `text` has `name` as a whole name followed by `(` (white space between allowed): a call of that
/// builtin, or the same words in a string (which only costs the cache). `sprintf(` is not `print(`, and
/// `input.trace` is not `trace(`.
fn calls(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].trim_start();
        !before.is_some_and(ident) && after.starts_with('(')
    })
}

/// `data.gate.claims`: the names of the token claims the bundle's rules read. Declared, it narrows
/// `input.principal.claims` to those claims, so that two tokens of one caller that differ only in claims no rule
/// reads (`exp`, `iat`, `jti`: every freshly issued token) make the same input document, and share a cached
/// decision. Not declared: every verified claim, as before the declaration existed. A declaration is checked against
/// the code: every mention of `claims` in a `*.rego` file (comments aside, strings included) must be followed by
/// `.<name>` or `["<name>"]` of a declared name; anything else (the claims read whole, with a computed key, or a
/// name not declared) refuses the bundle with the file and line, so a rule never silently reads an absent claim.
fn declared_claims(
    engine: &regorus::Engine,
    code: &[(&PathBuf, String)],
) -> Result<Option<Arc<[String]>>, BundleError> {
    let data = engine.get_data();
    let declared = match &data["gate"]["claims"] {
        regorus::Value::Undefined | regorus::Value::Null => return Ok(None),
        regorus::Value::Array(items) => {
            items.iter().map(|v| v.as_string().map(|s| s.to_string()).ok()).collect::<Option<Vec<String>>>()
        }
        _ => None,
    };
    let data_error = |message: String| BundleError::Compile { path: "data.gate.claims".into(), message };
    let declared = declared.ok_or_else(|| data_error("must be a list of claim names (strings)".into()))?;
    for (file, text) in code {
        if let Some((line, problem)) = undeclared_claim_read(text, &declared) {
            return Err(BundleError::Compile {
                path: format!("{}:{line}", file.display()),
                message: format!(
                    "{problem}, but data.gate.claims declares only {declared:?}: add the claim to data.gate.claims \
                     (or remove the declaration to hand every claim to the policy)"
                ),
            });
        }
    }
    Ok(Some(declared.into()))
}

/// The first mention of `claims` in `code` that does not read a declared claim by name: its line and what it reads.
fn undeclared_claim_read(code: &str, declared: &[String]) -> Option<(usize, String)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (at, _) in code.match_indices("claims") {
        let before = code[..at].chars().next_back();
        let rest = &code[at + "claims".len()..];
        if before.is_some_and(ident) || rest.chars().next().is_some_and(ident) {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let name = if let Some(dotted) = rest.strip_prefix('.') {
            let end = dotted.find(|c: char| !ident(c)).unwrap_or(dotted.len());
            Some(&dotted[..end]).filter(|n| !n.is_empty())
        } else {
            rest.strip_prefix("[\"").and_then(|r| r.split_once("\"]")).map(|(n, _)| n)
        };
        match name {
            Some(n) if declared.iter().any(|d| d == n) => {}
            Some(n) => return Some((line, format!("the bundle reads the claim {n:?}"))),
            None => return Some((line, "the bundle reads the claims whole or with a computed key".to_string())),
        }
    }
    None
}

/// Adds the files to an engine and returns the bundle revision (SHA-256 over names and contents).
pub fn load_files(engine: &mut regorus::Engine, files: &[PathBuf]) -> Result<String, BundleError> {
    let mut revision = Revision::default();
    for file in files {
        let path = file.display().to_string();
        let text = read(file)?;
        revision.add(file, &text);
        let compile = |message: String| BundleError::Compile { path: path.clone(), message };
        if path.ends_with(".json") {
            let value = regorus::Value::from_json_str(&text).map_err(|e| compile(format!("not valid JSON: {e}")))?;
            engine.add_data(value).map_err(|e| compile(e.to_string()))?;
        } else {
            engine.add_policy(path.clone(), text).map_err(|e| compile(e.to_string()))?;
        }
    }
    Ok(revision.finish())
}

/// The revision the files of `dir` would load as, without compiling them: what the reloader compares with the
/// bundle in force. Symlinks are followed, so it changes when a ConfigMap swaps its `..data` link.
pub fn fingerprint(dir: &Path) -> Result<String, BundleError> {
    let mut revision = Revision::default();
    for file in policy_files(dir, false)? {
        revision.add(&file, &read(&file)?);
    }
    Ok(revision.finish())
}

fn read(file: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(file)
        .map_err(|e| BundleError::Io { path: file.display().to_string(), message: e.to_string() })
}

/// SHA-256 over each file's name and contents, shortened to 16 hex digits.
#[derive(Default)]
struct Revision(Sha256);

impl Revision {
    fn add(&mut self, file: &Path, text: &str) {
        self.0.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        self.0.update([0]);
        self.0.update(text.as_bytes());
        self.0.update([0]);
    }

    fn finish(self) -> String {
        self.0.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}
