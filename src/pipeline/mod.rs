//! The request's phases as functions with typed inputs and outputs, shared by every consumer of the request path:
//! the gate (`stack`) runs them and forwards, `explain` runs the same ones and stops before forwarding.
//!
//! In request order:
//! - `classify`: canonical target, request context (workspace), the route from the table (`mlflow::routes`), body
//!   rules, parameters read where MLflow reads them, name and reserved-tag checks, the workflow's target;
//! - authenticate (`auth`), read the body (`stack`, by the route's body class);
//! - `enrich`: the registry, run, artifact and file facts the policy needs (`input.resource`);
//! - decide (`policy`, input document in `policy::input`);
//! - dispatch: forward (`proxy`), serve the workflow (`approvals`) or the grants API (`grants`);
//! - `results`: a search's page cut to what the caller may read (resource permissions);
//! - `effects`: stage history and webhook events of a permitted mutation (the audit record is `stack`'s).
//!
//! Layers (lowest first; `tests/layers.rs` enforces them): fold, body, tls, audit, metrics -> error -> mlflow
//! (MLflow's surface as data) -> config -> auth, proxy, webhooks, limits -> policy -> pipeline -> approvals ->
//! stack -> server, admin, explain.

pub mod classify;
pub mod effects;
pub mod enrich;
pub mod grants;
pub mod results;
