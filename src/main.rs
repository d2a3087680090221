//! The `mlflow-gate` command line: `serve`, `check`, and the `dev` helpers for local keys and tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mlflow_gate::config::Config;
use mlflow_gate::devkeys;

/// jemalloc, with background threads that return freed memory to the system: glibc's malloc kept the heap of a
/// burst of requests (its arenas grow and are seldom trimmed), so the gate's RSS stayed at its peak long after the
/// load (README, "Performance").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "mlflow-gate", version, about = "A policy-enforcing reverse proxy in front of MLflow")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Once listening, write the bound address (host:port) to this file.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Once listening, write the admin listener's bound address (host:port) to this file ([admin] only).
        #[arg(long)]
        admin_addr_file: Option<PathBuf>,
    },
    /// Validate the config and compile the policies, without serving.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the operation, target and policy input document a request would produce.
    Explain {
        /// HTTP method, e.g. POST.
        method: String,
        /// Path and query, e.g. /api/2.0/mlflow/model-versions/transition-stage.
        path: String,
        /// JSON request body.
        #[arg(long)]
        body: Option<String>,
        /// The caller's subject.
        #[arg(long, default_value = "alice")]
        sub: String,
        /// The caller's groups, comma-separated.
        #[arg(long, default_value = "")]
        groups: String,
        /// With a gate config: look up registry facts in the live MLflow and show the policy's decision.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The MLflow workspace (as the X-MLFLOW-WORKSPACE header); facts are looked up there.
        #[arg(long)]
        workspace: Option<String>,
        /// How the caller authenticated (`input.principal.via`): bearer, session (browser sign-in) or certificate.
        #[arg(long, default_value = "bearer", value_parser = ["bearer", "session", "certificate"])]
        via: String,
    },
    /// Ask for a model version to be moved to a stage or an alias (a Databricks-style transition request).
    RequestTransition {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        version: VersionArgs,
        #[command(flatten)]
        to: TargetArgs,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Approve an open transition request (if the policy also lets you transition, the gate performs it).
    Approve {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        version: VersionArgs,
        #[command(flatten)]
        to: TargetArgs,
        /// Archive the versions now in that stage when the transition is performed.
        #[arg(long)]
        archive_existing_versions: bool,
        /// Comment.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject an open transition request.
    Reject {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        version: VersionArgs,
        #[command(flatten)]
        to: TargetArgs,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
    /// List a model version's open transition requests (with --history, every activity).
    Requests {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        version: VersionArgs,
        /// Show the whole history: requests, approvals, rejections, cancellations, comments.
        #[arg(long)]
        history: bool,
    },
    /// The registry's history of a model: which version held each stage and governed alias, from when to when, who
    /// moved it, the decision id and whether it was break-glass (from the gate's stamps, and audit logs if given).
    History {
        #[command(flatten)]
        gate: GateArgs,
        /// Registered model name.
        #[arg(long)]
        name: String,
        /// Only this alias.
        #[arg(long, conflicts_with = "stage")]
        alias: Option<String>,
        /// Only this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Only tenures that lasted until this time or later (ms since the epoch, or RFC 3339 in UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only what held the stage or alias at this time ("what was serving at T"; same forms as --since).
        #[arg(long)]
        at: Option<String>,
        /// Audit log files (JSON lines) to add moves the stamps lack (matched by decision id). Repeatable.
        #[arg(long = "audit")]
        audit: Vec<PathBuf>,
        /// Print the JSON answer instead of one line per tenure.
        #[arg(long)]
        json: bool,
    },
    /// Resource permissions: grant, show and revoke a user's or group's level on an experiment, a registered model, a
    /// logged model or a trace (through the gate's grants API; you need MANAGE on the object).
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// Policy tools for the security team: run the bundle's tests, evaluate an input.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Local keys and tokens for demos and tests (production tokens come from your IdP).
    #[command(subcommand)]
    Dev(Dev),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the keyed chain of audit files given oldest first (e.g. audit.log.2 audit.log.1 audit.log): they
    /// must start at the genesis record (or --from-checkpoint), every record's MAC must verify, and they must reach
    /// and match every --checkpoint. Reports the first record altered, deleted, reordered, cut from the end or
    /// written with another key, and exits non-zero.
    Verify {
        /// The files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// File holding the audit key (base64), as [audit] key_file; repeat for records written before a key change.
        #[arg(long = "key-file")]
        key_files: Vec<PathBuf>,
        /// Environment variable holding the audit key (base64), as [audit] key_env; repeatable.
        #[arg(long = "key-env")]
        key_envs: Vec<String>,
        /// A published checkpoint the log must reach and match: its JSON, or a file whose last checkpoint is used
        /// (GET /audit/checkpoint, an AUDIT_CHECKPOINT webhook body, or the gate's process log). Repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<String>,
        /// The files start at or just after this checkpoint's record instead of the genesis record (older files
        /// were rotated away); same forms as --checkpoint.
        #[arg(long = "from-checkpoint")]
        from_checkpoint: Option<String>,
    },
}

/// Where the gate is and who is calling.
#[derive(clap::Args)]
struct GateArgs {
    /// The gate's URL.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    gate_url: String,
    /// Bearer token (from your IdP).
    #[arg(long, env = "MLFLOW_TRACKING_TOKEN", hide_env_values = true)]
    token: String,
}

/// What a transition request asks for: a stage, or an alias (the gate's `to_alias` extension).
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// Target stage: Staging, Production or Archived.
    #[arg(long)]
    stage: Option<String>,
    /// Target alias (e.g. champion), for alias-first promotion.
    #[arg(long)]
    alias: Option<String>,
    /// The removal of this alias from the version holding it (`to_alias` with `alias_action: "delete"`): deleting
    /// a governed alias needs its own approval.
    #[arg(long, value_name = "ALIAS")]
    remove_alias: Option<String>,
}

impl TargetArgs {
    /// The request body's `stage` or `to_alias`, merged into `body`.
    fn into_body(self, mut body: serde_json::Value) -> serde_json::Value {
        if let Some(m) = body.as_object_mut() {
            if let Some(s) = self.stage {
                m.insert("stage".into(), s.into());
            }
            if let Some(a) = self.alias {
                m.insert("to_alias".into(), a.into());
            }
            if let Some(a) = self.remove_alias {
                m.insert("to_alias".into(), a.into());
                m.insert("alias_action".into(), mlflow_gate::mlflow::workflow::ALIAS_DELETE.into());
            }
        }
        body
    }
}

/// Which model version.
#[derive(clap::Args)]
struct VersionArgs {
    /// Registered model name.
    #[arg(long)]
    name: String,
    /// Version number.
    #[arg(long)]
    version: String,
}

#[derive(Subcommand)]
enum GrantsCmd {
    /// Give the grantee a level on the object (creates the grant, or changes the one it has).
    Set {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        grant: GrantArgs,
        /// READ, USE, EDIT, MANAGE or NO_PERMISSIONS.
        #[arg(long)]
        level: String,
    },
    /// Show the grantee's grant on the object.
    Get {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Remove the grantee's grant on the object (it falls back to the defaults and to inherited grants).
    Revoke {
        #[command(flatten)]
        gate: GateArgs,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Write the grants of an MLflow basic-auth permissions database (its sqlite file) through the grants API;
    /// prints one line per grant, what cannot be migrated, and a summary.
    Migrate {
        #[command(flatten)]
        gate: GateArgs,
        /// The basic-auth database (e.g. basic_auth.db), opened read-only.
        #[arg(long)]
        from: PathBuf,
        /// Print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prepended to each basic-auth username to make the gate's subject (the token `sub`), e.g. `corp|`.
        #[arg(long, default_value = "")]
        subject_prefix: String,
        /// Grant a named role's permissions to the group named like the role (your IdP must put the role's users
        /// in that group), instead of to each user assigned to the role.
        #[arg(long)]
        roles_as_groups: bool,
    },
}

/// The object and the grantee of a grant.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("object").required(true).multiple(false)
    .args(["experiment_id", "model", "logged_model", "trace", "gateway_endpoint", "gateway_endpoint_name"])))]
struct GrantArgs {
    /// The experiment (by id).
    #[arg(long)]
    experiment_id: Option<String>,
    /// The registered model (by name).
    #[arg(long)]
    model: Option<String>,
    /// The logged model (by id, `m-...`): its own grants override what it inherits from its experiment.
    #[arg(long)]
    logged_model: Option<String>,
    /// The trace (by id, `tr-...`): its own grants override what it inherits from its experiment.
    #[arg(long)]
    trace: Option<String>,
    /// The AI-gateway endpoint (by id, `e-...`).
    #[arg(long)]
    gateway_endpoint: Option<String>,
    /// The AI-gateway endpoint (by name).
    #[arg(long)]
    gateway_endpoint_name: Option<String>,
    /// A user (the token subject).
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    user: Option<String>,
    /// A group (from the token's groups claim).
    #[arg(long)]
    group: Option<String>,
}

impl GrantArgs {
    /// The API family and the request fields naming the object and the grantee.
    fn fields(&self) -> (&'static str, serde_json::Map<String, serde_json::Value>) {
        let mut m = serde_json::Map::new();
        let objects = [
            ("experiments", "experiment_id", &self.experiment_id),
            ("registered-models", "name", &self.model),
            ("logged-models", "model_id", &self.logged_model),
            ("traces", "trace_id", &self.trace),
            ("gateway/endpoints", "endpoint_id", &self.gateway_endpoint),
            ("gateway/endpoints", "name", &self.gateway_endpoint_name),
        ];
        // clap requires exactly one of them.
        let (family, field, value) = objects
            .into_iter()
            .find_map(|(f, k, v)| v.as_deref().map(|v| (f, k, v)))
            .unwrap_or(("traces", "trace_id", ""));
        m.insert(field.into(), value.into());
        match (&self.user, &self.group) {
            (Some(u), _) => m.insert("username".into(), u.as_str().into()),
            (None, g) => m.insert("group_name".into(), g.clone().unwrap_or_default().into()),
        };
        (family, m)
    }
}

fn run_grants(cmd: GrantsCmd) -> Result<()> {
    match cmd {
        GrantsCmd::Set { gate, grant, level } => {
            let (family, mut fields) = grant.fields();
            fields.insert("permission".into(), level.into());
            let body = Some(serde_json::Value::Object(fields));
            let created = workflow(&gate, http::Method::POST, format!("{family}/permissions/create"), body.clone());
            match created {
                Err(e) if e.to_string().contains("INVALID_STATE") => {
                    workflow(&gate, http::Method::PATCH, format!("{family}/permissions/update"), body)
                }
                other => other,
            }
        }
        GrantsCmd::Get { gate, grant } => {
            let (family, fields) = grant.fields();
            let pairs: Vec<(&str, &str)> =
                fields.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))).collect();
            let query = mlflow_gate::client::query(&pairs);
            workflow(&gate, http::Method::GET, format!("{family}/permissions/get?{query}"), None)
        }
        GrantsCmd::Revoke { gate, grant } => {
            let (family, fields) = grant.fields();
            let body = Some(serde_json::Value::Object(fields));
            workflow(&gate, http::Method::DELETE, format!("{family}/permissions/delete"), body)
        }
        GrantsCmd::Migrate { gate, from, dry_run, subject_prefix, roles_as_groups } => {
            let options = mlflow_gate::mlflow::basic_auth::Options { subject_prefix, roles_as_groups };
            migrate(&gate, &from, dry_run, &options)
        }
    }
}

/// `grants migrate`: the plan read from the basic-auth database, written grant by grant (create, or update when
/// the grantee already has one), so every write is policy-checked and audited by the gate.
fn migrate(
    gate: &GateArgs,
    from: &Path,
    dry_run: bool,
    options: &mlflow_gate::mlflow::basic_auth::Options,
) -> Result<()> {
    use mlflow_gate::mlflow::basic_auth::{self, Object};
    use mlflow_gate::mlflow::permission::Grantee;
    let plan = basic_auth::read(from, options)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut failed = 0usize;
    for g in &plan.grants {
        let line = g.to_string();
        if dry_run {
            println!("would grant {line}");
            continue;
        }
        let (family, key, value) = match &g.object {
            Object::Experiment(id) => ("experiments", "experiment_id", id),
            Object::Model(name) => ("registered-models", "name", name),
            Object::GatewayEndpoint(id) => ("gateway/endpoints", "endpoint_id", id),
        };
        let who = if g.kind == Grantee::User { "username" } else { "group_name" };
        let body = serde_json::json!({ key: value, who: g.subject, "permission": g.level });
        let call = |method: http::Method, action: &str| {
            let path = format!("/api/2.0/mlflow/{family}/permissions/{action}");
            let (url, token, ws) = (&gate.gate_url, &gate.token, g.workspace.as_deref());
            runtime.block_on(mlflow_gate::client::call_in(url, token, ws, method, &path, Some(&body)))
        };
        let written = match call(http::Method::POST, "create") {
            Err(e) if e.to_string().contains("INVALID_STATE") => call(http::Method::PATCH, "update"),
            other => other,
        };
        match written {
            Ok(_) => println!("granted {line}"),
            Err(e) => {
                failed += 1;
                println!("FAILED {line}: {e}");
            }
        }
    }
    for s in &plan.skipped {
        println!("not migrated: {}: {}", s.what, s.why);
    }
    let verb = if dry_run { "to write" } else { "written" };
    println!(
        "summary: {} grant(s) {verb}, {failed} failed, {} item(s) not migrated",
        plan.grants.len() - failed,
        plan.skipped.len()
    );
    if failed > 0 {
        anyhow::bail!("{failed} grant(s) could not be written (see the FAILED lines)");
    }
    Ok(())
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Run every `test_*` rule of a policy directory, with a coverage summary; exits non-zero on any failure.
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Print the decision of a policy directory for an input document.
    Eval {
        /// JSON input document (as `mlflow-gate explain` prints it).
        #[arg(long)]
        input: PathBuf,
        /// The policy directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// The decision rule.
        #[arg(long, default_value = "data.mlflow_gate.decision")]
        entrypoint: String,
    },
}

#[derive(Subcommand)]
enum Dev {
    /// Generate a signing key: DIR/signing-key.pem (private) and DIR/jwks.json (public).
    Keygen {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// RS256 or ES256.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// Key id.
        #[arg(long, default_value = "dev-key-1")]
        kid: String,
    },
    /// Print a token signed with the key in DIR.
    Token {
        /// Directory written by `dev keygen`.
        #[arg(long)]
        key_dir: PathBuf,
        /// `iss` claim.
        #[arg(long)]
        issuer: String,
        /// `aud` claim.
        #[arg(long)]
        audience: String,
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// Comma-separated groups (the `groups` claim).
        #[arg(long, default_value = "")]
        groups: String,
        /// Lifetime in seconds (negative: already expired).
        #[arg(long, default_value_t = 3600, allow_hyphen_values = true)]
        ttl: i64,
        /// Extra claim as key=JSON (repeatable), e.g. --claim nbf=1700000000.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, addr_file, admin_addr_file } => {
            serve(&config, addr_file.as_deref(), admin_addr_file.as_deref())
        }
        Command::Check { config } => check(&config),
        Command::Explain { method, path, body, sub, groups, config, workspace, via } => {
            let who = Caller { sub: &sub, groups: &groups, via: &via };
            explain(&method, &path, body.as_deref(), &who, config.as_deref(), workspace.as_deref())
        }
        Command::RequestTransition { gate, version, to, comment } => workflow(
            &gate,
            http::Method::POST,
            "transition-requests/create".into(),
            Some(
                to.into_body(serde_json::json!({"name": version.name, "version": version.version, "comment": comment})),
            ),
        ),
        Command::Approve { gate, version, to, archive_existing_versions, comment } => workflow(
            &gate,
            http::Method::POST,
            "transition-requests/approve".into(),
            Some(to.into_body(serde_json::json!({"name": version.name, "version": version.version,
                "archive_existing_versions": archive_existing_versions, "comment": comment}))),
        ),
        Command::Reject { gate, version, to, comment } => workflow(
            &gate,
            http::Method::POST,
            "transition-requests/reject".into(),
            Some(
                to.into_body(serde_json::json!({"name": version.name, "version": version.version, "comment": comment})),
            ),
        ),
        Command::Requests { gate, version, history } => {
            let mut pairs = vec![("name", version.name.as_str()), ("version", version.version.as_str())];
            if history {
                pairs.push(("include_history", "true"));
            }
            workflow(
                &gate,
                http::Method::GET,
                format!("transition-requests/list?{}", mlflow_gate::client::query(&pairs)),
                None,
            )
        }
        Command::History { gate, name, alias, stage, since, at, audit, json } => {
            history(&gate, &name, HistoryFilter { alias, stage, since, at }, &audit, json)
        }
        Command::Grants(cmd) => run_grants(cmd),
        Command::Policy(cmd) => run_policy(cmd),
        Command::Audit(AuditCmd::Verify { files, key_files, key_envs, checkpoints, from_checkpoint }) => {
            audit_verify(&files, &key_files, &key_envs, &checkpoints, from_checkpoint.as_deref())
        }
        Command::Dev(dev) => run_dev(dev),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlflow-gate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs JSON lines to stderr through the non-blocking writer (`mlflow_gate::logline`); the guard writes what is
/// buffered when dropped. Without a thread for the writer, logs go straight to stderr.
fn init_logging() -> Option<mlflow_gate::logline::Guard> {
    let (writer, guard) = match mlflow_gate::logline::spawn(std::io::stderr(), mlflow_gate::logline::CAPACITY) {
        Ok((writer, guard)) => (tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer), Some(guard)),
        Err(e) => {
            eprintln!("mlflow-gate: cannot start the log writer thread ({e}); logging to stderr directly");
            (tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr), None)
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLFLOW_GATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(mlflow_gate::logline::JsonLine)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}

fn serve(config_path: &Path, addr_file: Option<&Path>, admin_addr_file: Option<&Path>) -> Result<()> {
    let _log = init_logging();
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let files = (addr_file.map(Path::to_path_buf), admin_addr_file.map(Path::to_path_buf));
        let on_ready = move |ready: mlflow_gate::Ready| {
            let (addr_file, admin_addr_file) = files;
            for (file, addr) in [(addr_file, Some(ready.addr)), (admin_addr_file, ready.admin)] {
                let (Some(file), Some(addr)) = (file, addr) else { continue };
                // Written whole, then renamed into place: a reader polling the file never sees it half written.
                let partial = file.with_extension("partial");
                let written =
                    std::fs::write(&partial, addr.to_string()).and_then(|()| std::fs::rename(&partial, &file));
                if let Err(e) = written {
                    tracing::error!(file = %file.display(), error = %e, "cannot write the address file");
                }
            }
        };
        mlflow_gate::run(listener, config, on_ready, shutdown_signal()).await?;
        tracing::info!("mlflow-gate stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let p = &config.policy;
    let bundle = mlflow_gate::policy::Bundle::load_with(&p.dir, &p.entrypoint, p.eval_timeout, p.engine)?;
    println!(
        "{}: OK ({} issuer(s); policy {} with {} file(s), revision {}; policy engine: {}; upstream {})",
        config_path.display(),
        config.auth.issuers.len(),
        config.policy.dir.display(),
        bundle.files().len(),
        bundle.revision(),
        bundle.engine_name(),
        config.upstream.url
    );
    if let Some(reason) = bundle.interpreter_reason() {
        println!("policy engine: interpreter because {reason}");
    }
    if let Some(b) = &config.browser {
        // Reads the client secret and the cookie keys, as serving would (never printed).
        mlflow_gate::browser::Browser::start(b, config.server.tls.is_some())?;
        println!(
            "browser sign-in: issuer {}, client {}, callback {}, {} retired cookie key(s)",
            b.issuer.issuer,
            b.client_id,
            b.redirect_url,
            b.previous_cookie_keys.len()
        );
    }
    check_fleet(&config.fleet)
}

/// The fleet's database URL is checked when its variable is set here (never printed); otherwise at start.
fn check_fleet(fleet: &mlflow_gate::config::FleetConfig) -> Result<()> {
    use mlflow_gate::fleetdb::{url_from_env, DbError};
    let replica = &fleet.replica_id;
    let Some(var) = &fleet.database_url_env else {
        println!("fleet: replica {replica}; no fleet database (webhook deliveries in the spool)");
        return Ok(());
    };
    match url_from_env(var) {
        Ok(_) => println!("fleet: replica {replica}; database from ${var}: a PostgreSQL URL"),
        Err(DbError::MissingEnv(_)) => {
            println!("fleet: replica {replica}; database from ${var}: not set here (checked when the gate starts)")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Who `explain` asks for.
struct Caller<'a> {
    sub: &'a str,
    groups: &'a str,
    via: &'a str,
}

fn explain(
    method: &str,
    path: &str,
    body: Option<&str>,
    who: &Caller<'_>,
    config: Option<&Path>,
    workspace: Option<&str>,
) -> Result<()> {
    let groups: Vec<String> =
        who.groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect();
    let mut principal = mlflow_gate::explain::principal(who.sub, &groups);
    principal.via = mlflow_gate::auth::Via::parse(who.via).ok_or_else(|| anyhow::anyhow!("--via {}?", who.via))?;
    let config = config.map(Config::load).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let upstream = match &config {
            Some(c) => Some(mlflow_gate::proxy::Upstream::new(&c.upstream).map_err(anyhow::Error::msg)?),
            None => None,
        };
        // The bundle decides which registry facts are looked up, as when serving.
        let bundle = match &config {
            Some(c) => {
                let p = &c.policy;
                Some(mlflow_gate::policy::Bundle::load_with(&p.dir, &p.entrypoint, p.eval_timeout, p.engine)?)
            }
            None => None,
        };
        let e = mlflow_gate::explain::explain_for(
            method,
            path,
            body,
            &principal,
            workspace,
            upstream.as_ref(),
            bundle.as_ref(),
        )
        .await;
        match &e.operation {
            Ok(op) => println!(
                "operation: {} (read_only: {}, resource: {}, public: {}, server_side_job: {}, workflow: {})",
                op.rpc,
                op.read_only,
                op.resource.as_str(),
                op.public,
                op.server_side_job,
                op.workflow
            ),
            Err(why) => println!("refused before the policy: {why}"),
        }
        let Some(input) = e.input else { return Ok(()) };
        println!("target: {}", input["resource"]["target"]);
        println!("input:\n{}", serde_json::to_string_pretty(&input)?);
        if let Some(bundle) = &bundle {
            let decision = mlflow_gate::policy::evaluate(bundle, mlflow_gate::policy::input::to_rego(&input))?;
            println!("decision:\n{}", serde_json::to_string_pretty(&decision)?);
        }
        Ok(())
    })
}

fn workflow(gate: &GateArgs, method: http::Method, path: String, body: Option<serde_json::Value>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let path = format!("/api/2.0/mlflow/{path}");
    let reply =
        runtime.block_on(mlflow_gate::client::call(&gate.gate_url, &gate.token, method, &path, body.as_ref()))?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

/// What `history` shows.
struct HistoryFilter {
    alias: Option<String>,
    stage: Option<String>,
    since: Option<String>,
    at: Option<String>,
}

fn history(gate: &GateArgs, name: &str, f: HistoryFilter, audit: &[PathBuf], json: bool) -> Result<()> {
    use mlflow_gate::mlflow::history;
    let time = |s: Option<String>| -> Result<Option<u64>> {
        s.map(|s| history::parse_time(&s).with_context(|| format!("{s:?} is not ms since the epoch or RFC 3339 (UTC)")))
            .transpose()
    };
    let query = history::Query { alias: f.alias, stage: f.stage, since: time(f.since)?, at: time(f.at)? };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let path = format!(
        "/api/2.0/mlflow/registry-history/get?{}",
        mlflow_gate::client::query(&[("name", name), ("include_entries", "true")])
    );
    let reply =
        runtime.block_on(mlflow_gate::client::call(&gate.gate_url, &gate.token, http::Method::GET, &path, None))?;
    let mut versions: Vec<(String, Vec<serde_json::Value>)> = reply
        .get("versions")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let entries = v.get("entries")?.as_array()?.clone();
            Some((v.get("version")?.as_str()?.to_string(), entries))
        })
        .collect();
    let mut records = Vec::new();
    for file in audit {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        records.extend(text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()));
    }
    history::merge_audit(&mut versions, &records, name);
    let answer = history::answer(name, &versions, &query, false);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let periods: Vec<history::Period> =
            history::timeline(&versions).into_iter().filter(|p| query.selects(p)).collect();
        print!("{}", history::render(&periods));
    }
    Ok(())
}

fn run_policy(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Test { dir } => {
            let report = mlflow_gate::policy::testing::run(&dir)?;
            for r in report.results.iter().filter(|r| !r.passed) {
                println!("FAIL {} ({}): {}", r.rule, r.file.display(), r.failure.as_deref().unwrap_or(""));
            }
            println!("\ncoverage:");
            for c in &report.coverage {
                let pct = if c.coverable == 0 { 100.0 } else { 100.0 * c.covered as f64 / c.coverable as f64 };
                let missed: Vec<String> = c.missed.iter().map(u32::to_string).collect();
                let missed = if missed.is_empty() {
                    String::new()
                } else {
                    format!(" (not covered: lines {})", missed.join(", "))
                };
                println!("  {:5.1}% {}/{} lines  {}{missed}", pct, c.covered, c.coverable, c.file);
            }
            // What the gate would serve this directory on: the bytecode VM, or the interpreter and why.
            let entrypoint = "data.mlflow_gate.decision";
            match mlflow_gate::policy::Bundle::load(&dir, entrypoint, std::time::Duration::from_secs(5)) {
                Ok(b) => match b.interpreter_reason() {
                    None => println!("\nserving: {entrypoint} on the bytecode VM (agrees with the interpreter)"),
                    Some(why) => println!("\nserving: {entrypoint} on the interpreter (about 8x slower): {why}"),
                },
                Err(e) => println!("\nserving: the gate would refuse this bundle ({entrypoint}): {e}"),
            }
            println!("\n{} passed, {} failed", report.passed(), report.failed());
            if report.failed() > 0 {
                bail!("{} policy test(s) failed", report.failed());
            }
            Ok(())
        }
        PolicyCmd::Eval { input, policies, entrypoint } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let value =
                regorus::Value::from_json_str(&text).with_context(|| format!("{}: not JSON", input.display()))?;
            let bundle = mlflow_gate::policy::Bundle::load(&policies, &entrypoint, std::time::Duration::from_secs(5))?;
            let decision = mlflow_gate::policy::evaluate(&bundle, value)?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(())
        }
    }
}

fn audit_verify(
    files: &[PathBuf],
    key_files: &[PathBuf],
    key_envs: &[String],
    checkpoints: &[String],
    from: Option<&str>,
) -> Result<()> {
    use mlflow_gate::audit::{AuditKey, KeySource, Verifier};
    let sources = key_files.iter().cloned().map(KeySource::File).chain(key_envs.iter().cloned().map(KeySource::Env));
    let keys = sources.map(|s| AuditKey::load(&s)).collect::<Result<Vec<_>, _>>()?;
    let verifier = Verifier {
        keys,
        from: from.map(read_checkpoint).transpose()?,
        checkpoints: checkpoints.iter().map(|c| read_checkpoint(c)).collect::<Result<_>>()?,
    };
    let chains = chains_by_replica(files)?;
    if chains.len() == 1 {
        return verify_chain(None, files, &verifier);
    }
    // Several replicas' files: one chain each; every checkpoint belongs to the replica it names.
    for c in verifier.checkpoints.iter().chain(&verifier.from) {
        let named = c.replica.as_ref().is_some_and(|r| chains.iter().any(|(k, _)| k.as_ref() == Some(r)));
        if !named {
            anyhow::bail!(
                "the checkpoint of record {} ({}) names no replica among the files' ({}): with several replicas' \
                 files, give each replica's own checkpoints",
                c.seq,
                c.time,
                chains.iter().map(|(r, _)| r.as_deref().unwrap_or("(none)")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut broken = 0;
    for (replica, chain_files) in &chains {
        let mine = |c: &&mlflow_gate::audit::Checkpoint| c.replica == *replica;
        let v = Verifier {
            keys: verifier.keys.clone(),
            from: verifier.from.iter().find(mine).cloned(),
            checkpoints: verifier.checkpoints.iter().filter(mine).cloned().collect(),
        };
        if let Err(e) = verify_chain(replica.as_deref(), chain_files, &v) {
            eprintln!("{e}");
            broken += 1;
        }
    }
    if broken > 0 {
        anyhow::bail!("{broken} of {} replicas' audit chains are broken", chains.len());
    }
    println!("all {} replicas' audit chains intact", chains.len());
    Ok(())
}

/// The files grouped by the replica whose chain they hold, in the order given (oldest first within a replica). A
/// file without a readable first record goes with the file before it (or, first of all, with the next one).
fn chains_by_replica(files: &[PathBuf]) -> Result<Vec<(Option<String>, Vec<PathBuf>)>> {
    let mut chains: Vec<(Option<String>, Vec<PathBuf>)> = Vec::new();
    let (mut leading, mut last) = (Vec::new(), None);
    for file in files {
        let found = mlflow_gate::audit::replica_of_file(file).map_err(|p| anyhow::anyhow!("{p}"))?;
        let Some(replica) = found else {
            match last.and_then(|i: usize| chains.get_mut(i)) {
                Some((_, list)) => list.push(file.clone()),
                None => leading.push(file.clone()),
            }
            continue;
        };
        let i = match chains.iter().position(|(r, _)| *r == replica) {
            Some(i) => i,
            None => {
                chains.push((replica, std::mem::take(&mut leading)));
                chains.len() - 1
            }
        };
        if let Some((_, list)) = chains.get_mut(i) {
            list.push(file.clone());
        }
        last = Some(i);
    }
    if chains.is_empty() {
        chains.push((None, leading));
    }
    Ok(chains)
}

/// Verifies one chain and prints what was proven.
fn verify_chain(replica: Option<&str>, files: &[PathBuf], verifier: &mlflow_gate::audit::Verifier) -> Result<()> {
    let of = replica.map(|r| format!(" of replica {r}")).unwrap_or_default();
    let s = mlflow_gate::audit::verify(files, verifier).map_err(|p| anyhow::anyhow!("audit chain{of} broken: {p}"))?;
    let start = match &verifier.from {
        Some(c) => format!("anchored at the checkpoint of record {}", c.seq),
        None => "from the genesis record".into(),
    };
    println!(
        "audit chain{of} intact: {} records in {} file(s), records {}..{} {start}, key id {}",
        s.records,
        files.len(),
        s.first_seq,
        s.last_seq,
        s.key_ids.join(", ")
    );
    for seq in &s.matched {
        println!("checkpoint{of} of record {seq}: matches");
    }
    for seq in &s.older {
        println!("checkpoint{of} of record {seq}: the files begin after it (it anchors them; nothing to compare)");
    }
    if verifier.checkpoints.is_empty() {
        println!("note: records cut from the end are found only against a published checkpoint (--checkpoint)");
    }
    Ok(())
}

/// A checkpoint given on the command line: its JSON (an object, a webhook body or a process log line), or a file
/// whose last line holding one is used (the whole file is tried first, for pretty-printed JSON).
fn read_checkpoint(arg: &str) -> Result<mlflow_gate::audit::Checkpoint> {
    use mlflow_gate::audit::Checkpoint;
    let from_text = |t: &str| serde_json::from_str(t).ok().and_then(|v| Checkpoint::find_in(&v));
    if arg.trim_start().starts_with('{') {
        return from_text(arg)
            .with_context(|| "--checkpoint: not a checkpoint ({seq, mac, time, key_id, checkpoint_mac})");
    }
    let text = std::fs::read_to_string(arg).with_context(|| format!("--checkpoint {arg}: cannot read it"))?;
    from_text(&text)
        .or_else(|| text.lines().rev().find_map(from_text))
        .with_context(|| format!("--checkpoint {arg}: holds no audit checkpoint"))
}

fn run_dev(dev: Dev) -> Result<()> {
    match dev {
        Dev::Keygen { dir, alg, kid } => {
            let alg = match alg.as_str() {
                "RS256" => jsonwebtoken::Algorithm::RS256,
                "ES256" => jsonwebtoken::Algorithm::ES256,
                other => bail!("--alg {other}: use RS256 or ES256"),
            };
            let key = devkeys::generate(alg, &kid)?;
            devkeys::write_dir(&dir, &key)?;
            println!("wrote {0}/signing-key.pem and {0}/jwks.json (kid {kid})", dir.display());
            Ok(())
        }
        Dev::Token { key_dir, issuer, audience, sub, groups, ttl, claims } => {
            let now = devkeys::now_secs() as i64;
            let groups: Vec<&str> = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            let mut doc = serde_json::json!({
                "iss": issuer, "aud": audience, "sub": sub, "groups": groups,
                "iat": now, "exp": now + ttl,
            });
            for claim in claims {
                let (k, v) = claim.split_once('=').with_context(|| format!("--claim {claim}: expected key=JSON"))?;
                let v: serde_json::Value = serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.into()));
                doc[k] = v;
            }
            println!("{}", devkeys::mint_from_dir(&key_dir, &doc)?);
            Ok(())
        }
    }
}
