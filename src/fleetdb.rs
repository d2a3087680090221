//! Beside the request path: the fleet's shared PostgreSQL (the database MLflow already uses), reached with the URL
//! in `fleet.database_url_env`. Two uses: the webhook outbox (pending deliveries that any replica can claim, in the
//! gate's own schema `mlflow_gate`), and per-model promotion locks (advisory locks that serialise the transitions
//! that archive a stage's other versions, which MLflow itself does not serialise on PostgreSQL). The URL is never
//! logged or shown; errors name the variable.

mod outbox;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use outbox::{Claimed, NewDelivery, OutboxStats};

/// The gate's own schema in MLflow's database.
pub const SCHEMA: &str = "mlflow_gate";
/// Connect (TCP, TLS, authentication) within this long, or fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A promotion waits at most this long for another replica's promotion of the same model.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Why the fleet database cannot be used. Messages never contain the URL (it holds the password).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The variable named by `fleet.database_url_env` is unset or empty.
    #[error("fleet.database_url_env: environment variable ${0} is not set (or is empty)")]
    MissingEnv(String),
    /// The variable holds something that is not a PostgreSQL URL (or key=value string).
    #[error("fleet.database_url_env: ${var} is not a PostgreSQL connection URL (postgres://user:password@host:port/database?sslmode=require): {reason}")]
    BadUrl {
        /// The variable's name.
        var: String,
        /// What is wrong (from the parser; it does not echo the URL).
        reason: String,
    },
    /// `fleet.database_ca_file` cannot be used.
    #[error("fleet.database_ca_file: {0}")]
    Ca(String),
    /// Connecting, or a statement, failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Connecting took longer than the connect timeout.
    #[error("PostgreSQL: no connection within {0:?}")]
    Timeout(Duration),
}

/// The connection settings and one shared client (reconnected when it breaks).
pub struct FleetDb {
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    client: Mutex<Option<Arc<Client>>>,
}

/// Reads and parses the URL in `var` (without connecting); for `mlflow-gate check` and for start.
pub fn url_from_env(var: &str) -> Result<tokio_postgres::Config, DbError> {
    let url = std::env::var(var).ok().filter(|v| !v.is_empty()).ok_or_else(|| DbError::MissingEnv(var.into()))?;
    let mut pg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| DbError::BadUrl { var: var.into(), reason: e.to_string() })?;
    if pg.get_hosts().is_empty() {
        return Err(DbError::BadUrl { var: var.into(), reason: "it names no host".into() });
    }
    pg.connect_timeout(CONNECT_TIMEOUT);
    Ok(pg)
}

impl FleetDb {
    /// Settings from the environment variable `var`; TLS (when the URL's `sslmode` asks for it) verifies the server
    /// against the system roots plus `ca_file`. Does not connect.
    pub fn from_env(var: &str, ca_file: Option<&Path>, replica_id: &str) -> Result<FleetDb, DbError> {
        let mut pg = url_from_env(var)?;
        pg.application_name(format!("mlflow-gate {replica_id}"));
        let mut roots = rustls::RootCertStore::empty();
        if pg.get_ssl_mode() != SslMode::Disable {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        if let Some(file) = ca_file {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::Ca(format!("{}: cannot read PEM certificates: {e}", file.display())))?;
            if roots.add_parsable_certificates(certs).0 == 0 {
                return Err(DbError::Ca(format!("{}: holds no usable CA certificate", file.display())));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(FleetDb { pg, tls: MakeRustlsConnect::new(tls), client: Mutex::new(None) })
    }

    /// A new connection of its own (its driver runs on a spawned task until the client is dropped).
    async fn connect(&self) -> Result<Client, DbError> {
        let connecting = self.pg.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| DbError::Timeout(CONNECT_TIMEOUT))??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "fleet database connection closed");
            }
        });
        Ok(client)
    }

    /// The shared client, connecting (again) if there is none or it broke.
    pub(crate) async fn client(&self) -> Result<Arc<Client>, DbError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = Arc::new(self.connect().await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Creates the gate's schema and tables if they do not exist (replicas starting together take turns).
    pub async fn migrate(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        client.batch_execute(&outbox::schema_sql()).await?;
        Ok(())
    }

    /// Holds the promotion lock of (`workspace`, `model`) across the fleet until the guard is dropped: another
    /// replica's promotion of the same model waits. A connection of its own, so the lock also ends if this
    /// process dies.
    pub async fn promotion_lock(&self, workspace: Option<&str>, model: &str) -> Result<PromotionLock, DbError> {
        let client = self.connect().await?;
        client.batch_execute(&format!("SET statement_timeout = {}", LOCK_WAIT.as_millis())).await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&lock_key(workspace, model)]).await?;
        Ok(PromotionLock { _client: client })
    }
}

/// A held promotion lock; closing its connection releases it.
pub struct PromotionLock {
    _client: Client,
}

/// A 64-bit advisory-lock key for a model in a workspace (SHA-256, domain-separated from other keys).
fn lock_key(workspace: Option<&str>, model: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"mlflow-gate promotion lock\n");
    for part in [workspace.unwrap_or(""), model] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_by_model_and_workspace() {
        let k = lock_key(None, "fraud");
        assert_eq!(k, lock_key(None, "fraud"));
        assert_ne!(k, lock_key(None, "fraud2"));
        assert_ne!(k, lock_key(Some("team"), "fraud"));
        assert_ne!(lock_key(Some("a"), "b\nc"), lock_key(Some("a\nb"), "c"), "length-prefixed parts");
    }

    #[test]
    fn a_bad_url_names_the_variable_and_not_the_url() {
        let var = "MLFLOW_GATE_TEST_BAD_DB_URL";
        std::env::set_var(var, "postgres://user:s3cret@host:notaport/db");
        let e = url_from_env(var).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(var) && !e.contains("s3cret"), "{e}");
        std::env::remove_var(var);
        let missing = url_from_env(var).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("is not set"), "{missing}");
    }
}
