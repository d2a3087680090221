//! mlflow-gate: a policy-enforcing reverse proxy in front of an unmodified MLflow server. A request's path:
//! `server` accepts it, `stack` runs its phases in order (`pipeline`: classify against the route table in
//! `mlflow`, identity in `auth`, facts in `pipeline::enrich`, decision in `policy`), `proxy` forwards what was
//! permitted (or `approvals` serves the workflow), `pipeline::effects` records what followed, and `error` turns
//! every failure into MLflow's error JSON. Modules form layers (see `pipeline` and `tests/layers.rs`).

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod body;
pub mod browser;
pub mod civil;
pub mod client;
pub mod config;
pub mod devkeys;
pub mod error;
pub mod explain;
pub mod fleetdb;
pub mod fold;
pub mod limits;
pub mod logline;
pub mod metrics;
pub mod mlflow;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod reviews;
pub mod server;
pub mod stack;
pub mod tls;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use config::Config;
use stack::Gate;

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy bundle does not load or fails its self-test.
    #[error("policy: {0}")]
    Policy(#[from] policy::BundleError),
    /// The upstream client cannot be built.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Webhook delivery cannot start (spool directory, secrets, CA files).
    #[error("webhooks: {0}")]
    Webhooks(#[from] webhooks::WebhookError),
    /// The audit log cannot be opened.
    #[error("{0}")]
    Audit(audit::AuditError),
    /// The admin listener cannot bind.
    #[error("admin.listen: {0}")]
    Admin(std::io::Error),
    /// The TLS certificate, key or client CA is unusable.
    #[error("tls: {0}")]
    Tls(tls::TlsError),
    /// The key fetcher cannot be built.
    #[error("auth: {0}")]
    Auth(#[from] auth::jwks::FetchError),
    /// Browser sign-in cannot start (a secret is missing or unusable).
    #[error("{0}")]
    Browser(#[from] browser::BrowserError),
    /// The fleet's database (`[fleet] database_url_env`) is unusable.
    #[error("{0}")]
    Fleet(#[from] fleetdb::DbError),
}

/// Loads the policy, builds the authenticator and the upstream client, and warms the issuers' keys.
pub async fn build_gate(config: Config) -> Result<Arc<Gate>, StartError> {
    let p = &config.policy;
    let bundle = policy::Bundle::load_with(&p.dir, &p.entrypoint, p.eval_timeout, p.engine)?;
    tracing::info!(
        revision = bundle.revision(),
        files = bundle.files().len(),
        engine = bundle.engine_name(),
        "policy bundle loaded"
    );
    let auth = auth::Authenticator::new(&config.auth)?;
    for issuer in auth.warm().await {
        tracing::warn!(%issuer, "no signing keys yet for this issuer; its tokens are refused until they load");
    }
    let upstream = proxy::Upstream::with_idle_pool(&config.upstream, config.server.load.max_concurrent_requests)
        .map_err(StartError::Upstream)?;
    let browser =
        config.browser.as_ref().map(|b| browser::Browser::start(b, config.server.tls.is_some())).transpose()?;
    let audit_sink = config.audit.clone();
    let (webhook_delivery, webhook_hooks) = (config.webhook_delivery.clone(), config.webhooks.clone());
    let mut policy = policy::Policy::new(bundle).with_decision_cache(config.policy.decision_cache_entries);
    policy.start_reloader(config.policy.reload_interval);
    let fleet_db = start_fleet_db(&config.fleet).await?;
    let fleet = config.fleet.clone();
    let mut gate = Gate::new(Arc::new(config), auth, policy, upstream);
    if let Some(browser) = browser {
        gate = gate.with_browser(browser);
    }
    if let Some(db) = &fleet_db {
        gate = gate.with_fleet_db(db.clone());
    }
    match (&fleet_db, webhook_hooks.is_empty()) {
        (_, true) => {}
        (Some(db), false) => {
            let hooks =
                webhooks::Webhooks::start_with_outbox(&webhook_delivery, &webhook_hooks, db.clone(), &fleet).await?;
            gate = gate.with_webhooks(hooks);
        }
        (None, false) => {
            let hooks = webhooks::Webhooks::start(&webhook_delivery, &webhook_hooks).await?;
            gate = gate.with_webhooks(hooks);
        }
    }
    if let Some(settings) = audit_sink {
        let publish = checkpoint_publisher(gate.webhooks().cloned());
        gate = gate.with_audit(audit::AuditLog::start(settings, publish).map_err(StartError::Audit)?);
    }
    Ok(Arc::new(gate))
}

/// Connects to the fleet's database, if configured, and creates the gate's schema there. The gate does not start
/// without it: a replica that could not reach the outbox would keep deliveries only in memory.
async fn start_fleet_db(fleet: &config::FleetConfig) -> Result<Option<Arc<fleetdb::FleetDb>>, StartError> {
    let Some(var) = &fleet.database_url_env else { return Ok(None) };
    let db = fleetdb::FleetDb::from_env(var, fleet.database_ca_file.as_deref(), &fleet.replica_id)?;
    db.migrate().await?;
    tracing::info!(replica_id = %fleet.replica_id, schema = fleetdb::SCHEMA, "fleet database ready");
    Ok(Some(Arc::new(db)))
}

/// Where a started gate listens: handed to `run`'s `on_ready` once it can serve (both may be port 0 in the
/// config: these are the bound addresses).
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// The gate's own listener.
    pub addr: std::net::SocketAddr,
    /// The admin listener (`[admin]`), if configured.
    pub admin: Option<std::net::SocketAddr>,
}

/// Runs a gate on `listener` until `shutdown` completes, then drains requests in flight.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run(listener, config, |_| {}, shutdown).await
}

/// Builds everything (policy, keys, upstream client, TLS), calls `on_ready` with the bound addresses once the gate
/// can serve, serves until `shutdown` completes, then drains requests in flight.
pub async fn run(
    listener: TcpListener,
    config: Config,
    on_ready: impl FnOnce(Ready),
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let server_config = config.server.clone();
    let (tls, cert) = match &config.server.tls {
        Some(settings) => {
            let cert = tls::ReloadingCert::load(&settings.cert_file, &settings.key_file).map_err(StartError::Tls)?;
            // The watcher lives as long as the runtime; it only reads the two files.
            drop(cert.spawn_watcher(settings.reload_interval));
            (Some(tls::server_config(settings, cert.clone()).map_err(StartError::Tls)?), Some(cert))
        }
        None => (None, None),
    };
    let admin = match &config.admin {
        Some(a) => Some(TcpListener::bind(a.listen).await.map_err(StartError::Admin)?),
        None => None,
    };
    let gate = build_gate(config).await?;
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(admin_listener) = admin {
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin listener (metrics, health) ready");
        }
        let hooks = gate.webhooks().cloned();
        let extra: admin::ExtraCounters = Arc::new(move || {
            let mut ext = webhook_counters(hooks.as_deref());
            if let Some(cert) = &cert {
                use std::sync::atomic::Ordering::Relaxed;
                ext.counters.push((
                    "mlflow_gate_tls_reloads_total",
                    "TLS certificate reloads.",
                    cert.reloads.load(Relaxed),
                ));
                ext.counters.push((
                    "mlflow_gate_tls_reload_failures_total",
                    "TLS certificate pairs refused on reload.",
                    cert.failures.load(Relaxed),
                ));
            }
            ext
        });
        tokio::spawn(admin::serve(admin_listener, gate.clone(), extra, async {
            let _ = admin_stopped.await;
        }));
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "mlflow-gate listening");
        on_ready(Ready { addr, admin: admin_addr });
    }
    server::serve(listener, gate.clone(), &server_config, tls, shutdown).await;
    // The audit log closes first: its final checkpoint is a webhook event, delivered before webhooks stop.
    if let Some(audit) = gate.audit() {
        audit.close(std::time::Duration::from_secs(10)).await;
    }
    if let Some(hooks) = gate.webhooks() {
        hooks.shutdown().await;
    }
    let _ = admin_stop.send(());
    Ok(())
}

/// Publishes audit checkpoints as `AUDIT_CHECKPOINT` webhook events (only hooks that list that event get them).
fn checkpoint_publisher(hooks: Option<Arc<webhooks::Webhooks>>) -> audit::Publish {
    Box::new(move |c: &audit::Checkpoint| {
        let Some(hooks) = &hooks else { return };
        let mut fields = serde_json::Map::new();
        fields.insert("checkpoint".into(), c.to_json());
        hooks.emit(webhooks::Event {
            event: webhooks::AUDIT_CHECKPOINT.into(),
            model_name: None,
            fields,
            principal: None,
            decision_id: format!("audit-checkpoint-{}", c.seq),
        });
    })
}

/// Webhook delivery counters for `/metrics`.
fn webhook_counters(hooks: Option<&webhooks::Webhooks>) -> metrics::External {
    let Some(stats) = hooks.map(webhooks::Webhooks::stats) else { return metrics::External::default() };
    metrics::External {
        counters: vec![
            ("mlflow_gate_webhook_deliveries_total", "Webhook deliveries that succeeded.", stats.delivered),
            (
                "mlflow_gate_webhook_failed_attempts_total",
                "Webhook delivery attempts that failed.",
                stats.failed_attempts,
            ),
            ("mlflow_gate_webhook_dropped_total", "Webhook deliveries given up.", stats.dropped),
        ],
        gauges: vec![("mlflow_gate_webhook_pending", "Webhook deliveries waiting.", stats.pending)],
        info: vec![],
    }
}
