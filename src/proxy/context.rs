//! The request's context, fixed at the start of the request path and carried to every upstream call the gate makes
//! on the request's behalf: the MLflow workspace (`X-MLFLOW-WORKSPACE`, validated once here by MLflow's own rules)
//! and the gate's request id. Look-ups, workflow writes and stage-history writes take a `&RequestContext`, so a call
//! that forgets the workspace does not compile; forwarding sends exactly the workspace the policy evaluated.

use http::{HeaderMap, HeaderValue};

/// The header MLflow reads the workspace from (`mlflow/utils/workspace_utils.py`).
pub const WORKSPACE_HEADER: &str = "x-mlflow-workspace";
/// MLflow's default workspace; always accepted, as MLflow does (it is exempt from the name rules).
pub const DEFAULT_WORKSPACE: &str = "default";
/// Header carrying the gate's request id, on responses and on the gate's own calls to MLflow.
pub const REQUEST_ID_HEADER: &str = "x-mlflow-gate-request-id";

/// Names MLflow reserves (`WorkspaceNameValidator._RESERVED`).
const RESERVED: [&str; 4] = ["workspaces", "api", "ajax-api", "static-files"];

/// Why the workspace header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    /// The header was sent more than once.
    #[error("the X-MLFLOW-WORKSPACE header was sent {0} times; send it once")]
    Repeated(usize),
    /// The value is not visible ASCII.
    #[error("the X-MLFLOW-WORKSPACE header is not a valid workspace name (not ASCII text)")]
    NotText,
    /// The value breaks MLflow's naming rules.
    #[error("the X-MLFLOW-WORKSPACE header {name:?} is not a valid workspace name: {why}")]
    Invalid {
        /// The value sent.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
}

/// A workspace name that MLflow accepts as is: `default`, or 2 to 63 characters of lowercase letters, digits and
/// inner hyphens, not reserved (MLflow's `WorkspaceNameValidator`). Values MLflow would trim or treat as "no
/// workspace" (padding, empty) are refused rather than normalised, so that the name the policy sees is the one MLflow
/// resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workspace(String);

impl Workspace {
    /// Validates a workspace name.
    pub fn parse(name: &str) -> Result<Workspace, WorkspaceError> {
        let invalid = |why| Err(WorkspaceError::Invalid { name: name.to_string(), why });
        if name == DEFAULT_WORKSPACE {
            return Ok(Workspace(name.to_string()));
        }
        if name.trim().is_empty() {
            return invalid("it is empty");
        }
        if name.trim() != name {
            return invalid("it has leading or trailing whitespace");
        }
        if !(2..=63).contains(&name.len()) {
            return invalid("it must be 2 to 63 characters long");
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !name.chars().all(allowed) || name.starts_with('-') || name.ends_with('-') {
            return invalid("use lowercase letters, digits and inner hyphens only");
        }
        if RESERVED.contains(&name) {
            return invalid("the name is reserved by MLflow");
        }
        Ok(Workspace(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What every upstream call made for one request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    workspace: Option<Workspace>,
    request_id: String,
}

impl RequestContext {
    /// A context with the given workspace (`None`: the request named none, so MLflow uses its default).
    pub fn new(request_id: &str, workspace: Option<Workspace>) -> RequestContext {
        RequestContext { workspace, request_id: request_id.to_string() }
    }

    /// The context of a client request: its workspace header, validated (sent at most once, a valid name).
    pub fn from_headers(headers: &HeaderMap, request_id: &str) -> Result<RequestContext, WorkspaceError> {
        let values: Vec<&HeaderValue> = headers.get_all(WORKSPACE_HEADER).iter().collect();
        let workspace = match values.as_slice() {
            [] => None,
            [one] => Some(Workspace::parse(one.to_str().map_err(|_| WorkspaceError::NotText)?)?),
            more => return Err(WorkspaceError::Repeated(more.len())),
        };
        Ok(RequestContext::new(request_id, workspace))
    }

    /// The workspace, when the request named one.
    pub fn workspace(&self) -> Option<&Workspace> {
        self.workspace.as_ref()
    }

    /// The workspace's name, when the request named one.
    pub fn workspace_name(&self) -> Option<&str> {
        self.workspace.as_ref().map(Workspace::as_str)
    }

    /// The gate's request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Sets the headers of an upstream request from this context: the validated workspace replaces whatever the
    /// map held (so what MLflow resolves is what the policy saw).
    pub fn apply_workspace(&self, headers: &mut HeaderMap) {
        headers.remove(WORKSPACE_HEADER);
        if let Some(v) = self.workspace_name().and_then(|w| HeaderValue::from_str(w).ok()) {
            headers.insert(WORKSPACE_HEADER, v);
        }
    }

    /// Sets the headers of one of the gate's own calls: the workspace and the request id (for MLflow's logs).
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.apply_workspace(headers);
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID_HEADER, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(WORKSPACE_HEADER, v);
            }
        }
        h
    }

    #[test]
    fn valid_workspace_names_are_accepted_as_sent() {
        for name in ["default", "team", "ml-platform", "a1", "x".repeat(63).as_str()] {
            let ctx = RequestContext::from_headers(&headers(&[name.as_bytes()]), "r1");
            assert_eq!(ctx.as_ref().ok().and_then(|c| c.workspace_name()), Some(name), "{name}");
        }
        let none = RequestContext::from_headers(&HeaderMap::new(), "r1");
        assert_eq!(none.ok().and_then(|c| c.workspace().cloned()), None);
    }

    #[test]
    fn names_mlflow_would_refuse_or_rewrite_are_refused() {
        for bad in [
            "",
            " ",
            " team",
            "team ",
            "Team",
            "t",
            "-team",
            "team-",
            "te_am",
            "te.am",
            "team,default",
            "api",
            "workspaces",
            "ajax-api",
            "static-files",
            "../x",
            "teäm",
        ] {
            assert!(Workspace::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Workspace::parse(&"x".repeat(64)).is_err());
        assert_eq!(
            RequestContext::from_headers(&headers(&[b"te\xc3\xa4m"]), "r1").err(),
            Some(WorkspaceError::NotText)
        );
    }

    #[test]
    fn a_repeated_workspace_header_is_refused() {
        let two = RequestContext::from_headers(&headers(&[b"team", b"default"]), "r1");
        assert_eq!(two.err(), Some(WorkspaceError::Repeated(2)));
        let same = RequestContext::from_headers(&headers(&[b"team", b"team"]), "r1");
        assert_eq!(same.err(), Some(WorkspaceError::Repeated(2)));
    }

    #[test]
    fn applying_the_context_replaces_the_workspace_header_and_adds_the_request_id() {
        let ctx = RequestContext::new("abc", Workspace::parse("team").ok());
        let mut h = headers(&[b"default", b"other"]);
        ctx.apply(&mut h);
        assert_eq!(h.get_all(WORKSPACE_HEADER).iter().collect::<Vec<_>>(), ["team"]);
        assert_eq!(h[REQUEST_ID_HEADER], "abc");
        let mut h = headers(&[b"default"]);
        RequestContext::new("abc", None).apply_workspace(&mut h);
        assert!(!h.contains_key(WORKSPACE_HEADER));
    }
}
