//! MLflow's HTTP surface as data (no I/O): the canonical target (`canon`), parameters read the way MLflow reads them
//! (`params`, `target`), the route table mapping (method, path) to an MLflow operation (`routes`, with the gate's
//! own workflow routes), names, reserved tags and stamps, registry events, GraphQL limits, and the workflow's state
//! in model-version tags (`workflow`), and the registry's history (`history`). The phases that use them are in `pipeline`.

pub mod basic_auth;
pub mod canon;
pub mod events;
pub mod graphql;
pub mod history;
pub mod names;
pub mod otlp;
pub mod params;
pub mod permission;
pub mod routes;
pub mod stamps;
pub mod target;
pub mod workflow;
