//! mlflow-gate: a policy-enforcing reverse proxy in front of an unmodified MLflow server. A request's path:
//! `server` accepts it, `stack` runs its phases in order (canonical target and route in `mlflow`, identity in
//! `auth`, decision in `policy`), `proxy` forwards what was permitted, and `error` turns every failure into
//! MLflow's error JSON.

pub mod approvals;
pub mod auth;
pub mod body;
pub mod client;
pub mod config;
pub mod devkeys;
pub mod error;
pub mod explain;
pub mod mlflow;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod stack;

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
    /// The key fetcher cannot be built.
    #[error("auth: {0}")]
    Auth(#[from] auth::jwks::FetchError),
}

/// Loads the policy, builds the authenticator and the upstream client, and warms the issuers' keys.
pub async fn build_gate(config: Config) -> Result<Arc<Gate>, StartError> {
    let bundle = policy::Bundle::load(&config.policy.dir, &config.policy.entrypoint, config.policy.eval_timeout)?;
    tracing::info!(revision = bundle.revision(), files = bundle.files().len(), "policy bundle loaded");
    let auth = auth::Authenticator::new(&config.auth)?;
    for issuer in auth.warm().await {
        tracing::warn!(%issuer, "no signing keys yet for this issuer; its tokens are refused until they load");
    }
    let upstream = proxy::Upstream::new(&config.upstream).map_err(StartError::Upstream)?;
    Ok(Arc::new(Gate::new(Arc::new(config), auth, policy::Policy::new(bundle), upstream)))
}

/// Runs a gate on `listener` until `shutdown` completes, then drains requests in flight.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let header_timeout = config.server.header_read_timeout;
    let grace = config.server.shutdown_grace;
    let gate = build_gate(config).await?;
    server::serve(listener, gate, header_timeout, grace, shutdown).await;
    Ok(())
}
