//! Request path, the last phase: the after-effects of a mutation the policy permitted and MLflow (or the workflow)
//! carried out. The stage-history stamp and the registry's webhook events are written here, once, for the normal
//! path (`stack`) and for the approval workflow (`approvals`) alike. The audit record is written by `stack` for
//! every request, after its response.

use http::Method;
use serde_json::{Map, Value};

use crate::mlflow::events::RegistryEvent;
use crate::mlflow::routes::Operation;
use crate::mlflow::target::field;
use crate::mlflow::{history, stamps};
use crate::proxy::{CallError, RequestContext, Upstream};
use crate::webhooks::{Event, Webhooks};

/// The payload field (webhooks) and target field (audit, log) naming the MLflow workspace of a request that named
/// one, so that receivers never confuse same-named models of two workspaces.
pub const WORKSPACE_FIELD: &str = "workspace";

/// Why the stage history could not be recorded (the mutation itself already happened).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// MLflow could not be asked.
    #[error("MLflow could not be reached: {0}")]
    Unreachable(#[source] CallError),
    /// MLflow refused the tag write.
    #[error("MLflow answered {status}: {reply}")]
    Refused {
        /// MLflow's status.
        status: http::StatusCode,
        /// MLflow's answer.
        reply: Value,
    },
}

/// After MLflow confirmed a stage change, alias move or alias deletion (`op` on `target`), stamps it on the version
/// as one new history tag (`history::entry_key`), in the request's workspace: one set-tag, never a read-append-write,
/// so concurrent changes from several gates all keep their entry. `resource` holds the facts the policy saw (the
/// alias's previous holder); `break_glass` is the policy's flag. Does nothing for other operations. Returns whether
/// an entry was written.
pub async fn record_history(
    upstream: &Upstream,
    ctx: &RequestContext,
    op: &Operation,
    target: &Map<String, Value>,
    resource: &Value,
    sub: &str,
    break_glass: bool,
) -> Result<bool, HistoryError> {
    let now = now_ms();
    let change = stamps::Change { sub, now_ms: now, request_id: ctx.request_id(), break_glass };
    let Some((version, entry)) = stamps::history_entry(op, target, resource, &change) else { return Ok(false) };
    let Some(name) = field(target, "name") else { return Ok(false) };
    let body = serde_json::json!({
        "name": name, "version": version, "key": history::entry_key(now), "value": entry.to_string(),
    });
    let path = "/api/2.0/mlflow/model-versions/set-tag";
    match upstream.call_json(ctx, Method::POST, path, Some(&body)).await {
        Ok((status, _)) if status.is_success() => Ok(true),
        Ok((status, reply)) => Err(HistoryError::Refused { status, reply }),
        Err(e) => Err(HistoryError::Unreachable(e)),
    }
}

/// How long a request waits for its events to be stored in the fleet's outbox before it is answered anyway (they
/// stay in memory and are stored when the database answers).
const STORE_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends registry events to the webhooks, if any, on behalf of `sub` in the request's workspace; returns once
/// their deliveries are stored (the spool: at once; the fleet's outbox: after the insert, at most `STORE_BOUND`).
pub async fn emit(webhooks: Option<&Webhooks>, events: Vec<RegistryEvent>, sub: &str, ctx: &RequestContext) {
    let Some(hooks) = webhooks else { return };
    let pending: Vec<_> = events.into_iter().map(|e| hooks.emit(webhook_event(e, sub, ctx))).collect();
    for p in pending {
        if !p.stored_within(STORE_BOUND).await {
            tracing::error!("webhook deliveries not yet stored in the fleet database; answering anyway");
        }
    }
}

/// Converts a registry event for the webhooks; the request's workspace becomes the payload's `workspace`.
pub fn webhook_event(e: RegistryEvent, sub: &str, ctx: &RequestContext) -> Event {
    let mut fields = e.fields;
    if let Some(w) = ctx.workspace_name() {
        fields.insert(WORKSPACE_FIELD.into(), w.into());
    }
    Event {
        event: e.event.to_string(),
        model_name: e.model_name,
        fields,
        principal: Some(sub.to_string()),
        decision_id: ctx.request_id().to_string(),
    }
}

/// Milliseconds since the Unix epoch (history entries, stamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
