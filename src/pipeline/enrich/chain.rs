//! Enrichment, lineage across registered models: a version whose source is another registered version
//! (`models:/<name>/<version>`, `models:/<name>@<alias>`, as `MlflowClient.copy_model_version` sends) is followed
//! hop by hop, in the request's workspace, to the registered version whose source names a run or a logged model.
//! The evaluation gate then judges that run, and approvals are looked up on the version it was copied from. A chain
//! that cannot be followed (a missing version, a loop, too many hops, a stage or `latest` URI, a hop MLflow would
//! not let the gate read) is reported in `chain_error`, which denies every promotion of the version. Each hop
//! carries its registered model's permission facts, so the policy can refuse a copy from a model the caller may not
//! read (the gate itself reads every hop with its own credentials).

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{files, get, model_version_facts, permissions, str_of, EnrichError, Enricher, LookupFailure};
use crate::mlflow::permission::Anchor;
use crate::mlflow::workflow;
use crate::proxy::{RequestContext, Upstream};

/// The most registered versions followed from one source.
pub const MAX_HOPS: usize = 8;

/// A followed chain: each hop, the version copied from (the first hop), the origin (the last registered version,
/// whose source is a run or a logged model), or why the chain could not be followed.
#[derive(Debug, Default)]
pub struct Chain {
    /// `{source, name, version, run_id, model_id, created_by}` per registered version followed, in order (and
    /// `permissions` after [`Chain::add_permissions`]).
    pub hops: Vec<Value>,
    /// The facts of the version copied from.
    pub first: Option<Map<String, Value>>,
    /// The facts of the last registered version of the chain.
    pub origin: Option<Map<String, Value>>,
    /// Why the chain could not be followed.
    pub error: Option<String>,
}

/// A registry reference in a `models:/` source.
#[derive(Debug, PartialEq)]
enum Ref<'a> {
    Version(&'a str, &'a str),
    Alias(&'a str, &'a str),
}

/// `None` when the source is not a registry reference (a run location, a logged model `models:/m-<id>`).
fn parse(source: &str) -> Option<Result<Ref<'_>, String>> {
    let rest = source.strip_prefix("models:/")?;
    if rest.starts_with("m-") && !rest.contains('@') {
        return None;
    }
    if let Some((name, alias)) = rest.rsplit_once('@') {
        if name.is_empty() || alias.is_empty() || alias.contains('/') {
            return Some(Err(format!("{source} is not a model URI the gate can follow")));
        }
        return Some(Ok(Ref::Alias(name, alias)));
    }
    match rest.rsplit_once('/') {
        Some((name, version))
            if !name.is_empty() && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(Ok(Ref::Version(name, version)))
        }
        _ => Some(Err(format!(
            "{source} names no version (a stage or `latest` moves); copy a version by number or by alias"
        ))),
    }
}

/// Whether a source is a registry reference the chain follows.
pub fn is_registry_reference(source: &str) -> bool {
    parse(source).is_some()
}

/// Follows `source` (the source of version `own`, if it exists yet) to its origin.
pub async fn resolve(
    up: &Upstream,
    ctx: &RequestContext,
    source: &str,
    own: Option<(&str, &str)>,
) -> Result<Chain, EnrichError> {
    let mut chain = Chain::default();
    let mut seen: HashSet<(String, String)> = own.map(|(n, v)| (n.to_string(), v.to_string())).into_iter().collect();
    let mut current = source.to_string();
    loop {
        let reference = match parse(&current) {
            None => break,
            Some(Err(e)) => {
                chain.error = Some(e);
                break;
            }
            Some(Ok(r)) => r,
        };
        if chain.hops.len() == MAX_HOPS {
            chain.error = Some(format!("its source leads through more than {MAX_HOPS} registered versions"));
            break;
        }
        let found = match reference {
            Ref::Version(n, v) => {
                let q = [("name", n), ("version", v)];
                get(up, ctx, "copied model version", "/api/2.0/mlflow/model-versions/get", &q).await
            }
            Ref::Alias(n, a) => {
                let q = [("name", n), ("alias", a)];
                get(up, ctx, "copied model version", "/api/2.0/mlflow/registered-models/alias", &q).await
            }
        };
        let found = match found {
            Ok(found) => found,
            Err(EnrichError { cause: LookupFailure::Status(s), .. }) if s.as_u16() == 401 || s.as_u16() == 403 => {
                chain.error = Some(format!("{current} could not be read (MLflow answered {s})"));
                break;
            }
            Err(e) => return Err(e),
        };
        let Some(mv) = found.as_ref().and_then(|v| v.get("model_version")) else {
            chain.error = Some(format!("{current} does not exist"));
            break;
        };
        let facts = model_version_facts(mv);
        let name = str_of(&facts, "name").unwrap_or_default().to_string();
        let version = str_of(&facts, "version").unwrap_or_default().to_string();
        if !seen.insert((name.clone(), version.clone())) {
            chain.error = Some(format!("{current} leads back to version {version} of {name} (a loop)"));
            break;
        }
        chain.hops.push(json!({"source": current, "name": name, "version": version, "run_id": facts.get("run_id"),
            "model_id": facts.get("model_id"), "created_by": facts.get("created_by")}));
        let next = str_of(&facts, "source").map(str::to_owned);
        if chain.first.is_none() {
            chain.first = Some(facts.clone());
        }
        chain.origin = Some(facts);
        match next {
            Some(next) => current = next,
            None => {
                chain.error = Some(format!("version {version} of {name} has no source"));
                break;
            }
        }
    }
    Ok(chain)
}

impl Chain {
    /// Adds to each hop the permission facts of its registered model (`permissions`, shaped as
    /// `input.resource.permissions`: the model's creator stamp and grants, in the request's workspace), looked up
    /// afresh. The gate follows the chain with its own credentials; the policy decides whether the caller may read
    /// every model the copy comes from (`policies/environments.rego`, `lineage.unreadable`).
    pub async fn add_permissions(
        &mut self,
        enricher: &Enricher,
        up: &Upstream,
        ctx: &RequestContext,
    ) -> Result<(), EnrichError> {
        for hop in &mut self.hops {
            let name = hop.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let target: Map<String, Value> = [("name".to_string(), Value::String(name))].into_iter().collect();
            let resolved = permissions::resolve(enricher, up, ctx, Anchor::RegisteredModel, &target, true).await?;
            if let Value::Object(h) = hop {
                h.insert("permissions".into(), permissions::to_facts(ctx, Anchor::RegisteredModel, &resolved));
            }
        }
        Ok(())
    }

    /// The policy's view (merged into `input.resource.lineage`): `hops`, `copied_from` (with its approvals),
    /// `origin` and `chain_error`. `copied_from` is `{name, version, created_by, current_stage, approvals}`.
    pub fn facts(&self, copied_from: Option<Value>) -> Map<String, Value> {
        let origin = self.origin.as_ref().map(|o| json!({"name": o.get("name"), "version": o.get("version")}));
        let mut m = Map::new();
        m.insert("hops".into(), Value::Array(self.hops.clone()));
        m.insert("copied_from".into(), copied_from.unwrap_or(Value::Null));
        m.insert("origin".into(), origin.unwrap_or(Value::Null));
        m.insert("chain_error".into(), self.error.clone().map_or(Value::Null, Value::String));
        m
    }
}

/// The version copied from, with its approvals as the policy counts them (validity included: an approval is valid
/// while the evidence it vouched for, files included, is unchanged). `run` is the run the chain leads to; it is
/// used for the fingerprint only if it is that version's run.
pub async fn copied_from(
    up: &Upstream,
    ctx: &RequestContext,
    first: &Map<String, Value>,
    run: Option<&Map<String, Value>>,
) -> Result<Value, EnrichError> {
    let mut first = first.clone();
    let (name, version) = (str_of(&first, "name").map(str::to_owned), str_of(&first, "version").map(str::to_owned));
    if let (Some(n), Some(v)) = (name.as_deref(), version.as_deref()) {
        if workflow::has_approvals(&first) {
            first.insert("files".into(), files::version_files(up, ctx, n, v).await?);
        }
    }
    let run = run.filter(|r| str_of(r, "run_id").is_some() && str_of(r, "run_id") == str_of(&first, "run_id"));
    let tags = first.get("tags").and_then(Value::as_object).cloned().unwrap_or_default();
    let approvals = workflow::approvals_for_policy(&workflow::activities(&tags), &first, run);
    Ok(json!({"name": name, "version": version, "created_by": first.get("created_by"),
        "current_stage": first.get("current_stage"), "approvals": approvals}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_are_parsed_and_others_are_not() {
        assert_eq!(parse("models:/fraud-detector/3"), Some(Ok(Ref::Version("fraud-detector", "3"))));
        assert_eq!(parse("models:/team/fraud/12"), Some(Ok(Ref::Version("team/fraud", "12"))));
        assert_eq!(parse("models:/fraud-detector@champion"), Some(Ok(Ref::Alias("fraud-detector", "champion"))));
        assert_eq!(parse("models:/m-0123abcd"), None);
        assert_eq!(parse("runs:/r1/model"), None);
        assert_eq!(parse("mlflow-artifacts:/1/r1/artifacts/model"), None);
        for moving in ["models:/fraud-detector/Production", "models:/fraud-detector/latest", "models:/fraud-detector"] {
            assert!(matches!(parse(moving), Some(Err(_))), "{moving}");
        }
        assert!(matches!(parse("models:/@champion"), Some(Err(_))));
    }
}
