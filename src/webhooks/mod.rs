//! After the request path: once MLflow has confirmed a permitted registry mutation (or the policy denied one), the
//! gate emits an [`Event`]; each `[[webhooks]]` entry that subscribes to it gets a Databricks-shaped, signed POST,
//! persisted to a spool first and delivered asynchronously with retries, so no request ever waits on a receiver.

mod dispatch;
mod events;
mod hook;
mod outbox;
mod sign;
mod spool;
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{FleetConfig, WebhookConfig, WebhookDeliveryConfig};
use crate::fleetdb::{FleetDb, NewDelivery};
use dispatch::{Job, Shared};
use hook::Hook;
use spool::{Record, Spool};

pub use crate::mlflow::events::{is_known_event, AUDIT_CHECKPOINT, KNOWN_EVENTS};

/// One registry event, built by the gate after MLflow confirmed a permitted mutation (or after a denial).
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Databricks event name, one of [`KNOWN_EVENTS`], e.g. `MODEL_VERSION_TRANSITIONED_TO_PRODUCTION`.
    pub event: String,
    /// The registered model the event is about (model-specific webhooks match on it).
    pub model_name: Option<String>,
    /// Further payload keys in Databricks' names: `version`, `from_stage`, `to_stage`, `comment`, `text`, `tags`,
    /// `alias`, `reasons`, `rpc`... (keys the gate sets itself are ignored here).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The acting subject.
    pub principal: Option<String>,
    /// The gate's request id.
    pub decision_id: String,
}

/// Delivery counters (since start) for a `/metrics` endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookStats {
    /// Deliveries answered with 2xx.
    pub delivered: u64,
    /// Attempts that failed (network error, timeout, or a non-2xx answer).
    pub failed_attempts: u64,
    /// Deliveries given up (refused with a 4xx, or attempts exhausted).
    pub dropped: u64,
    /// Deliveries emitted or re-queued and not yet delivered or dropped.
    pub pending: u64,
}

/// Why webhook delivery could not start. Each names the config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A `*_env` key names an environment variable that is unset or empty.
    #[error("{key}: environment variable ${var} is not set (or is empty)")]
    MissingEnv {
        /// The config key, e.g. `webhooks[0].secret_env`.
        key: String,
        /// The variable's name.
        var: String,
    },
    /// `authorization_env` holds a value that cannot be an HTTP header.
    #[error("{key}: ${var} is not a valid header value")]
    BadHeaderValue {
        /// The config key.
        key: String,
        /// The variable's name.
        var: String,
    },
    /// The TLS client cannot be built (e.g. an unreadable `ca_file`).
    #[error("{key}: {message}")]
    Tls {
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Webhooks are configured without `webhook_delivery.spool_dir`.
    #[error("webhook_delivery.spool_dir: missing; [[webhooks]] need a directory for pending deliveries")]
    NoSpoolDir,
    /// The spool directory cannot be created or read.
    #[error("webhook_delivery.spool_dir: {path}: {source}")]
    Spool {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The webhook subsystem: configured hooks, where pending deliveries are kept (a spool directory, or the fleet's
/// PostgreSQL outbox), and the delivery task(s).
pub struct Webhooks {
    shared: Arc<Shared>,
    spool: Option<Spool>,
    outbox: Option<mpsc::UnboundedSender<outbox::Write>>,
    queue: mpsc::UnboundedSender<Job>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    outbox_tasks: Mutex<Vec<JoinHandle<()>>>,
    next_key: AtomicU64,
}

/// Returned by [`Webhooks::emit`]: resolves once the event's deliveries are stored where every replica can find
/// them (at once with a spool, which writes before `emit` returns; after the insert with the fleet's outbox).
pub struct Persisted(Option<oneshot::Receiver<()>>);

impl Persisted {
    /// Waits at most `bound` for the deliveries to be stored; false if they were not stored by then (they are
    /// still kept in memory and stored later, unless the process stops first).
    pub async fn stored_within(self, bound: std::time::Duration) -> bool {
        match self.0 {
            None => true,
            Some(rx) => matches!(tokio::time::timeout(bound, rx).await, Ok(Ok(()))),
        }
    }
}

impl Webhooks {
    /// Starts delivery (spawns a tokio task), first re-queuing what the spool holds from before a restart. With no
    /// hooks configured it starts nothing and `emit` does nothing.
    pub async fn start(config: &WebhookDeliveryConfig, hooks: &[WebhookConfig]) -> Result<Arc<Webhooks>, WebhookError> {
        let roots = if hooks.iter().any(|h| h.verify_tls && h.url.scheme_str() == Some("https")) {
            tokio::task::spawn_blocking(tls::native_roots).await.unwrap_or_else(|_| rustls::RootCertStore::empty())
        } else {
            rustls::RootCertStore::empty()
        };
        let hooks = hooks
            .iter()
            .enumerate()
            .map(|(i, c)| Hook::new(i, c, &roots, config.timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let (spool, old) = match (&config.spool_dir, hooks.is_empty()) {
            (_, true) => (None, Vec::new()),
            (None, false) => return Err(WebhookError::NoSpoolDir),
            (Some(dir), false) => {
                let (spool, old) = Spool::open(dir)
                    .map_err(|source| WebhookError::Spool { path: dir.display().to_string(), source })?;
                (Some(spool), old)
            }
        };
        let shared = Arc::new(Shared { hooks, settings: config.clone(), counters: Default::default() });
        let (queue, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let task = (!shared.hooks.is_empty()).then(|| tokio::spawn(dispatch::run(shared.clone(), rx, stop_rx)));
        let webhooks = Webhooks {
            shared,
            spool,
            outbox: None,
            queue,
            stop,
            task: Mutex::new(task),
            outbox_tasks: Mutex::new(Vec::new()),
            next_key: AtomicU64::new(0),
        };
        webhooks.requeue(old);
        for hook in webhooks.shared.hooks.iter() {
            tracing::info!(webhook_id = %hook.id, host = %hook.host, signed = hook.signed(), "webhook configured");
        }
        Ok(Arc::new(webhooks))
    }

    /// Starts delivery from the fleet's PostgreSQL outbox (`[fleet] database_url_env`): pending deliveries are
    /// stored there, claimed by any replica under a lease, and survive the loss of the replica that made them.
    pub async fn start_with_outbox(
        config: &WebhookDeliveryConfig,
        hooks: &[WebhookConfig],
        db: Arc<FleetDb>,
        fleet: &FleetConfig,
    ) -> Result<Arc<Webhooks>, WebhookError> {
        let roots =
            tokio::task::spawn_blocking(tls::native_roots).await.unwrap_or_else(|_| rustls::RootCertStore::empty());
        let hooks = hooks
            .iter()
            .enumerate()
            .map(|(i, c)| Hook::new(i, c, &roots, config.timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared { hooks, settings: config.clone(), counters: Default::default() });
        let outbox = Arc::new(outbox::Outbox {
            db,
            replica: fleet.replica_id.clone(),
            claimer: format!("{}/{}", fleet.replica_id, sign::delivery_id()),
            settings: fleet.clone(),
            wake: tokio::sync::Notify::new(),
        });
        let (writes, batches) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(outbox::write(outbox.clone(), batches, stop_rx.clone())),
            tokio::spawn(outbox::deliver(shared.clone(), outbox, stop_rx)),
        ];
        // The spool's queue is not used with the outbox (nothing is enqueued in memory).
        let (queue, _) = mpsc::unbounded_channel();
        let webhooks = Webhooks {
            shared,
            spool: None,
            outbox: Some(writes),
            queue,
            stop,
            task: Mutex::new(None),
            outbox_tasks: Mutex::new(tasks),
            next_key: AtomicU64::new(0),
        };
        for hook in webhooks.shared.hooks.iter() {
            tracing::info!(webhook_id = %hook.id, host = %hook.host, signed = hook.signed(), store = "fleet outbox",
                "webhook configured");
        }
        Ok(Arc::new(webhooks))
    }

    fn requeue(&self, old: Vec<(std::path::PathBuf, Record)>) {
        let mut requeued = 0usize;
        for (path, record) in old {
            let Some(hook) = self.shared.hooks.iter().position(|h| h.id == record.webhook_id) else {
                tracing::warn!(file = %path.display(), webhook_id = %record.webhook_id,
                    "spooled delivery for a webhook no longer configured; left in the spool");
                continue;
            };
            self.enqueue(hook, record.delivery_id, record.event, record.body.into(), Some(path));
            requeued += 1;
        }
        if requeued > 0 {
            tracing::info!(requeued, "webhook deliveries re-queued from the spool");
        }
    }

    /// Never blocks the caller on the network: persists one delivery per matching webhook to the spool (written
    /// and fsync'd before this returns, so a short synchronous disk write) and queues it; or, with the fleet's
    /// outbox, hands them to the outbox's writer: await the result to know they are stored.
    pub fn emit(&self, event: Event) -> Persisted {
        if !is_known_event(&event.event) {
            tracing::warn!(event = %event.event, "emitted an event no webhook can subscribe to");
        }
        if let Some(writes) = &self.outbox {
            return self.emit_to_outbox(writes, &event);
        }
        let Some(spool) = &self.spool else { return Persisted(None) };
        let matching: Vec<(usize, &Hook)> =
            self.shared.hooks.iter().enumerate().filter(|(_, h)| h.matches(&event)).collect();
        if matching.is_empty() {
            return Persisted(None);
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let records: Vec<Record> = matching
            .iter()
            .map(|(_, h)| Record {
                v: 1,
                delivery_id: sign::delivery_id(),
                webhook_id: h.id.clone(),
                event: event.event.clone(),
                body: events::payload(&event, &h.id, now_ms),
            })
            .collect();
        let files = spool.persist(&records);
        for (((hook, _), record), file) in matching.into_iter().zip(records).zip(files) {
            self.enqueue(hook, record.delivery_id, record.event, record.body.into(), file);
        }
        Persisted(None)
    }

    fn emit_to_outbox(&self, writes: &mpsc::UnboundedSender<outbox::Write>, event: &Event) -> Persisted {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let rows: Vec<NewDelivery> = (self.shared.hooks.iter().filter(|h| h.matches(event)))
            .map(|h| NewDelivery {
                delivery_id: sign::delivery_id(),
                webhook_id: h.id.clone(),
                event: event.event.clone(),
                body: events::payload(event, &h.id, now_ms),
            })
            .collect();
        if rows.is_empty() {
            return Persisted(None);
        }
        let (stored, rx) = oneshot::channel();
        if writes.send((rows, stored)).is_err() {
            tracing::error!(event = %event.event, "webhook delivery lost: the outbox writer has stopped");
        }
        Persisted(Some(rx))
    }

    fn enqueue(
        &self,
        hook: usize,
        delivery_id: String,
        event: String,
        body: bytes::Bytes,
        file: Option<std::path::PathBuf>,
    ) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let counters = &self.shared.counters;
        counters.pending.fetch_add(1, Ordering::Relaxed);
        let job = Job { key, hook, delivery_id, event, body, file, attempts: 0 };
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job) {
            if job.file.is_some() {
                let delivery_id = &job.delivery_id;
                tracing::info!(%delivery_id, "webhook delivery spooled after shutdown; it is sent after a restart");
            } else {
                let delivery_id = &job.delivery_id;
                tracing::error!(%delivery_id, "webhook delivery lost: delivery has stopped and the spool write failed");
                counters.finished(&counters.dropped);
            }
        }
    }

    /// Stops after in-flight attempts finish (bounded by the delivery timeout); undelivered events stay in the spool.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let outbox_tasks = self.outbox_tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for task in task.into_iter().chain(outbox_tasks) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the webhook delivery task failed");
            }
        }
    }

    /// Counters for a `/metrics` endpoint.
    pub fn stats(&self) -> WebhookStats {
        self.shared.counters.snapshot()
    }
}
