//! TEMPORARY stub until routes.rs lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    RegisteredModel,
    ModelVersion,
    GraphQl,
    Unknown,
}
impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::RegisteredModel => "registered_model",
            Resource::ModelVersion => "model_version",
            Resource::GraphQl => "graphql",
            Resource::Unknown => "unknown",
        }
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub rpc: &'static str,
    pub read_only: bool,
    pub resource: Resource,
    pub public: bool,
    pub server_side_job: bool,
    pub path_params: Vec<(&'static str, String)>,
}
pub fn classify(method: &str, path: &str) -> Option<Operation> {
    let op = |rpc, ro, public| {
        Some(Operation {
            rpc,
            read_only: ro,
            resource: Resource::ModelVersion,
            public,
            server_side_job: false,
            path_params: vec![],
        })
    };
    match (method, path) {
        ("GET", "/health") | ("GET", "/version") => op("Health", true, true),
        ("POST", "/api/2.0/mlflow/model-versions/transition-stage") => {
            op("TransitionModelVersionStage", false, false)
        }
        ("POST", "/api/2.0/mlflow/registered-models/create") => {
            op("CreateRegisteredModel", false, false)
        }
        ("GET", _) => op("Get", true, false),
        _ => None,
    }
}
