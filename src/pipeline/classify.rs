//! Request path, the classification phase (after admission, before authentication and again once the body is
//! read): what a request is, from the route table alone. Canonical target and validated request context, the
//! operation with every route attribute (public, body class, workflow, server-side job), the body rules, the
//! parameters read where MLflow reads them, name and reserved-tag checks, and the workflow's target completion.
//! The gate and `explain` both call these functions; neither has a copy.

use http::{HeaderMap, Method, Uri, Version};
use serde_json::{Map, Value};

use crate::error::GateError;
use crate::mlflow::canon::{self, Target};
use crate::mlflow::routes::{self, rpc, BodyClass, Operation, Resource};
use crate::mlflow::{graphql, names, params, permission, stamps, target as target_fields, workflow};
use crate::proxy::RequestContext;

/// A request's head, classified: everything known before authentication.
#[derive(Debug, Clone)]
pub struct Head {
    /// The method (upper-case).
    pub method: Method,
    /// The canonical target: exactly what the policy sees and what is forwarded.
    pub target: Target,
    /// The validated request context (workspace, request id).
    pub context: RequestContext,
    /// The route in the table, if any.
    pub route: Option<Operation>,
    /// The experiment an OTLP export names in its `X-Mlflow-Experiment-Id` header (MLflow reads it there, not in
    /// the protobuf body), for that route only.
    pub otlp_experiment: Option<String>,
}

/// The header MLflow's OTLP ingest reads the experiment from.
pub const OTLP_EXPERIMENT_HEADER: &str = "x-mlflow-experiment-id";

/// A JSON object body as the policy sees it (normalised).
pub type JsonBody = Map<String, Value>;

/// Classifies a request's head: canonical target, then request context, then route.
pub fn head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Head, GateError> {
    let target = canon::canonicalize(uri, version).map_err(|e| GateError::BadRequest(e.to_string()))?;
    // Validated once; every look-up, write and the forwarded request use this context, never the raw header.
    let context =
        RequestContext::from_headers(headers, request_id).map_err(|e| GateError::InvalidParameter(e.to_string()))?;
    let route = routes::classify(method.as_str(), &target.path);
    let otlp_experiment = match &route {
        Some(op) if op.rpc == rpc::EXPORT_TRACES => otlp_experiment(headers)?,
        _ => None,
    };
    Ok(Head { method: method.clone(), target, context, route, otlp_experiment })
}

/// The OTLP export's experiment header: absent, or one visible-ASCII value (several are refused: which one MLflow
/// would take is not the gate's to guess).
fn otlp_experiment(headers: &HeaderMap) -> Result<Option<String>, GateError> {
    let mut values = headers.get_all(OTLP_EXPERIMENT_HEADER).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return Err(GateError::BadRequest(format!(
            "the request has several {OTLP_EXPERIMENT_HEADER} headers; send one"
        )));
    }
    first
        .map(|v| v.to_str().map(|s| s.trim().to_owned()))
        .transpose()
        .map_err(|_| GateError::BadRequest(format!("the {OTLP_EXPERIMENT_HEADER} header is not visible ASCII")))
}

impl Head {
    /// The operation, when the route needs no authentication (public routes, CORS preflights).
    pub fn public(&self) -> Option<&Operation> {
        self.route.as_ref().filter(|op| op.public)
    }

    /// The operation the policy is asked about: the route's, or an unknown read. An unknown route that may change
    /// state is denied here.
    pub fn operation(&self) -> Result<Operation, GateError> {
        match &self.route {
            Some(op) => Ok(op.clone()),
            None if matches!(self.method, Method::GET | Method::HEAD) => {
                Ok(Operation::plain(rpc::UNKNOWN, true, Resource::Unknown))
            }
            None => Err(GateError::PermissionDenied(format!(
                "{} {} is not a route mlflow-gate knows; unknown routes that may change state are denied",
                self.method, self.target.path
            ))),
        }
    }

    /// Unauthenticated callers never make MLflow read a body: a public request with one is refused unread.
    pub fn public_body(&self, has_body: bool) -> Result<(), GateError> {
        if has_body {
            return Err(GateError::BadRequest(format!(
                "{} {} takes no request body, and this one came with a body; send the request without one",
                self.method, self.target.path
            )));
        }
        Ok(())
    }

    /// Whether a body may be sent with this request at all: never with GET/HEAD, nor to a route without a body.
    pub fn body_allowed(&self, op: &Operation) -> Result<(), GateError> {
        if matches!(self.method, Method::GET | Method::HEAD) || op.body == BodyClass::None {
            return Err(GateError::BadRequest(format!(
                "{} requests with a body are refused: MLflow may read parameters from it that the gate did not check; send parameters in the query string",
                self.method
            )));
        }
        Ok(())
    }

    /// The target's parameters, read where MLflow reads them (the query for GET/HEAD, the UI's upload-artifact and
    /// a workflow DELETE sent without a body, as Databricks clients do; the body otherwise), completed for the
    /// workflow, then checked: names MLflow would refuse and reserved tags are refused before the policy.
    pub fn parameters(&self, op: &Operation, body: Option<&JsonBody>) -> Result<Map<String, Value>, GateError> {
        let reads_query =
            (op.workflow && self.method == Method::DELETE && body.is_none()) || target_fields::reads_query(op.rpc);
        let method = if reads_query { "GET" } else { self.method.as_str() };
        let mut query = self.target.query_pairs();
        // Resource permissions: the ids a route lists (`run_ids`, `trace_ids`, `experiment_ids`), each checked, and
        // the objects a GraphQL query names.
        let listed = permission::listed(op, method, &query, body).map_err(GateError::InvalidParameter)?;
        if let Some(repeated) = permission::repeated_scalar(op.rpc) {
            query.retain(|(k, _)| k != repeated);
        }
        let mut fields = target_fields::extract(method, &query, body, &op.path_params)
            .map_err(|e| GateError::BadRequest(e.to_string()))?;
        if let Some((field, ids)) = listed {
            fields.insert(field.to_string(), Value::Array(ids));
        }
        if let Some(experiment) = permission::nested_experiment(op.rpc, body).map_err(GateError::BadRequest)? {
            fields.insert("experiment_id".into(), Value::String(experiment));
        }
        if let Some(experiment) = self.otlp_experiment.as_ref().filter(|_| op.rpc == rpc::EXPORT_TRACES) {
            fields.insert("experiment_id".into(), Value::String(experiment.clone()));
        }
        if op.body == BodyClass::GraphQl {
            let checked = graphql::objects(body).map_err(|e| match e {
                graphql::Refusal::Invalid(m) => GateError::InvalidParameter(m),
                graphql::Refusal::Unchecked(m) => GateError::PermissionDenied(m),
            })?;
            fields.extend(checked);
        }
        if op.workflow {
            workflow::prepare_target(op, &mut fields)?;
        }
        if let Some(problem) = names::refused_write(op, &fields, body) {
            return Err(GateError::InvalidParameter(problem));
        }
        if let Some(key) = stamps::reserved_tag_write(op, &fields, body) {
            return Err(GateError::PermissionDenied(format!(
                "the tag {key:?} is reserved: only mlflow-gate writes it (tags starting with {:?} and the run tag {:?})",
                stamps::RESERVED_PREFIX,
                stamps::RUN_USER_TAG
            )));
        }
        Ok(fields)
    }

    /// The query string as the policy sees it (`input.request.query`).
    pub fn query(&self) -> Map<String, Value> {
        params::query_map(&self.target.query_pairs())
    }
}

/// Parses a read body: a JSON object within the structural limits, normalised (camelCase keys, stages), with the
/// number of values it holds (for the budget of buffered bytes).
pub fn parse_body(bytes: &[u8]) -> Result<(JsonBody, usize), GateError> {
    let (mut json, values) =
        params::parse_json_object_counted(bytes).map_err(|e| GateError::BadRequest(e.to_string()))?;
    target_fields::normalize_body(&mut json).map_err(|e| GateError::BadRequest(e.to_string()))?;
    crate::mlflow::stamps::drop_copied_stamps(&mut json);
    Ok((json, values))
}

/// Checks a GraphQL body's query (size, depth) before MLflow parses it.
pub fn check_graphql(op: &Operation, json: &JsonBody) -> Result<(), GateError> {
    if op.body == BodyClass::GraphQl {
        graphql::check_body(json).map_err(|e| GateError::InvalidParameter(e.to_string()))?;
    }
    Ok(())
}
