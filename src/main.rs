//! The `mlflow-gate` command line: `serve`, `check`, and the `dev` helpers for local keys and tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mlflow_gate::config::Config;
use mlflow_gate::devkeys;

#[derive(Parser)]
#[command(
    name = "mlflow-gate",
    version,
    about = "A policy-enforcing reverse proxy in front of MLflow"
)]
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
    },
    /// Validate the config and compile the policies, without serving.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Local keys and tokens for demos and tests (production tokens come from your IdP).
    #[command(subcommand)]
    Dev(Dev),
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
        Command::Serve { config, addr_file } => serve(&config, addr_file.as_deref()),
        Command::Check { config } => check(&config),
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLFLOW_GATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config_path: &Path, addr_file: Option<&Path>) -> Result<()> {
    init_logging();
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let gate = mlflow_gate::build_gate(config.clone()).await?;
        if let Some(file) = addr_file {
            std::fs::write(file, addr.to_string())
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        tracing::info!(%addr, upstream = %config.upstream.url, "mlflow-gate listening");
        mlflow_gate::server::serve(
            listener,
            gate,
            config.server.header_read_timeout,
            config.server.shutdown_grace,
            shutdown_signal(),
        )
        .await;
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
    let bundle = mlflow_gate::policy::Bundle::load(
        &config.policy.dir,
        &config.policy.entrypoint,
        config.policy.eval_timeout,
    )?;
    println!(
        "{}: OK ({} issuer(s); policy {} with {} file(s), revision {}; upstream {})",
        config_path.display(),
        config.auth.issuers.len(),
        config.policy.dir.display(),
        bundle.files().len(),
        bundle.revision(),
        config.upstream.url
    );
    Ok(())
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
            println!(
                "wrote {0}/signing-key.pem and {0}/jwks.json (kid {kid})",
                dir.display()
            );
            Ok(())
        }
        Dev::Token {
            key_dir,
            issuer,
            audience,
            sub,
            groups,
            ttl,
            claims,
        } => {
            let now = devkeys::now_secs() as i64;
            let groups: Vec<&str> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect();
            let mut doc = serde_json::json!({
                "iss": issuer, "aud": audience, "sub": sub, "groups": groups,
                "iat": now, "exp": now + ttl,
            });
            for claim in claims {
                let (k, v) = claim
                    .split_once('=')
                    .with_context(|| format!("--claim {claim}: expected key=JSON"))?;
                let v: serde_json::Value =
                    serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.into()));
                doc[k] = v;
            }
            println!("{}", devkeys::mint_from_dir(&key_dir, &doc)?);
            Ok(())
        }
    }
}
