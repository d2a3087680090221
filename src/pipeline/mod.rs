//! The request's phases as functions with typed inputs and outputs, shared by every consumer of the request path:
//! the gate (`stack`) runs them and forwards, `explain` runs the same ones and stops before forwarding.
//!
//! Map, in request order: `classify` (canonical target, request context, route from the table, body rules,
//! parameters read where MLflow reads them, name and reserved-tag checks) -> authenticate (`auth`) -> read the
//! body (`stack`, by the route's body class) -> enrich (`mlflow::enrich`) -> decide (`policy`) -> dispatch
//! (`proxy` or `approvals`) -> after-effects (`stack`).

pub mod classify;
pub mod effects;
pub mod enrich;
