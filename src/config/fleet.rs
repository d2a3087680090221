//! Configuration: `[fleet]`, what a replica of a fleet of gates needs: its id (in audit records, outbox claims
//! and metrics) and, optionally, the shared PostgreSQL that holds the webhook outbox and the promotion locks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Validator};

/// `[fleet]`: this replica's id and the fleet's shared database, if any.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// This replica's id: `fleet.replica_id`, else `$HOSTNAME` (a Kubernetes pod's name), else the host's name.
    pub replica_id: String,
    /// Environment variable holding the PostgreSQL URL; `None`: no shared database (webhooks use the spool).
    pub database_url_env: Option<String>,
    /// Extra CA certificates (PEM) trusted for the database's TLS certificate.
    pub database_ca_file: Option<PathBuf>,
    /// How long a replica's claim on a webhook delivery lasts before another replica may take it.
    pub lease: Duration,
    /// How often a replica looks for due deliveries in the outbox (its own are tried at once).
    pub poll_interval: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    replica_id: Option<String>,
    database_url_env: Option<String>,
    database_ca_file: Option<String>,
    lease_secs: Option<u64>,
    poll_interval_ms: Option<u64>,
}

/// The default replica id: `$HOSTNAME`, else the kernel's host name, else "gate".
fn default_replica_id() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env.or_else(from_kernel).map(|h| h.trim().to_string()).filter(|h| valid_id(h)).unwrap_or_else(|| "gate".into())
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl Validator {
    pub(super) fn fleet(&self, raw: RawFleet, webhook_timeout_secs: u64) -> Result<FleetConfig, ConfigError> {
        let key = |k: &str| format!("fleet.{k}");
        let replica_id = match raw.replica_id {
            Some(id) if !valid_id(&id) => {
                return Err(self.err(&key("replica_id"), "1-128 characters of letters, digits, '.', '_', ':' and '-'"))
            }
            Some(id) => id,
            None => default_replica_id(),
        };
        if let Some(var) = raw.database_url_env.as_deref().filter(|v| !valid_env_name(v)) {
            return Err(self.err(&key("database_url_env"), format!("{var:?} is not an environment variable name")));
        }
        let database_ca_file = raw.database_ca_file.map(|f| self.path(&f));
        if database_ca_file.is_some() && raw.database_url_env.is_none() {
            return Err(self.err(&key("database_ca_file"), "only with database_url_env"));
        }
        let lease_secs = raw.lease_secs.unwrap_or(60);
        if lease_secs <= webhook_timeout_secs && raw.database_url_env.is_some() {
            return Err(self.err(
                &key("lease_secs"),
                format!("must be longer than webhook_delivery.timeout_secs ({webhook_timeout_secs}): a claim must outlive an attempt"),
            ));
        }
        let poll_ms = raw.poll_interval_ms.unwrap_or(1000);
        if poll_ms == 0 {
            return Err(self.err(&key("poll_interval_ms"), "must be greater than 0"));
        }
        Ok(FleetConfig {
            replica_id,
            database_url_env: raw.database_url_env,
            database_ca_file,
            lease: Duration::from_secs(lease_secs),
            poll_interval: Duration::from_millis(poll_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const HOOK: &str = "[[webhooks]]\nurl = \"https://hooks.example/x\"\nevents = [\"MODEL_VERSION_CREATED\"]\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{}{extra}", crate::config::TEST_BASE), Path::new("/etc/gate/gate.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_fleet_database_replaces_the_spool_and_names_its_variable() {
        let c = parse(&format!("[fleet]\nreplica_id = \"gate-0\"\ndatabase_url_env = \"DB_URL\"\n{HOOK}")).unwrap();
        assert_eq!(c.fleet.replica_id, "gate-0");
        assert_eq!(c.fleet.database_url_env.as_deref(), Some("DB_URL"));
        assert_eq!((c.fleet.lease.as_secs(), c.fleet.poll_interval.as_millis()), (60, 1000));
        assert!(c.webhook_delivery.spool_dir.is_none());
    }

    #[test]
    fn without_a_fleet_database_webhooks_still_need_a_spool() {
        assert!(parse(HOOK).unwrap_err().contains("webhook_delivery.spool_dir"));
        let c = parse("").unwrap();
        assert!(!c.fleet.replica_id.is_empty(), "defaults to the host name");
    }

    #[test]
    fn bad_fleet_keys_are_refused_by_name() {
        let cases = [
            ("[fleet]\nreplica_id = \"gate 0\"\n", "fleet.replica_id"),
            ("[fleet]\ndatabase_url_env = \"postgres://u:p@h/db\"\n", "fleet.database_url_env"),
            ("[fleet]\ndatabase_ca_file = \"ca.pem\"\n", "fleet.database_ca_file"),
            ("[fleet]\ndatabase_url_env = \"DB\"\nlease_secs = 10\n", "fleet.lease_secs"),
            ("[fleet]\npoll_interval_ms = 0\n", "fleet.poll_interval_ms"),
            ("[fleet]\ndatabase_url = \"x\"\n", "database_url"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        let both = format!("[fleet]\ndatabase_url_env = \"DB\"\n[webhook_delivery]\nspool_dir = \"/s\"\n{HOOK}");
        assert!(parse(&both).unwrap_err().contains("remove spool_dir"));
    }
}
