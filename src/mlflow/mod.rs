//! Classification: what MLflow will do with a request. The canonical target (`canon`), parameters read the way
//! MLflow reads them (`params`) and the route table mapping (method, path) to an MLflow operation (`routes`).

pub mod canon;
pub mod events;
pub mod graphql;
pub mod names;
pub mod params;
pub mod routes;
pub mod stamps;
pub mod target;
pub mod workflow;
