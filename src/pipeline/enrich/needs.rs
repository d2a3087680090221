//! Enrichment, what to look up: the registry facts the policy in force reads for an operation, so that a request
//! pays only for the look-ups whose answers someone reads (a tag write does not make MLflow load the whole model).
//!
//! The bundle declares them in its data, per RPC: `data.gate.facts.<RPC>` is a list of fact names
//! (`registered_model`, `model_version`, `source_run`, `files`; see [`Fact`]). An RPC the bundle does not declare,
//! and every RPC of a bundle that declares nothing, gets every fact, as before the declaration existed: narrowing
//! is opt-in, and a fact the policy may read is never silently missing. A declared fact that cannot be fetched
//! still denies (the look-up's error), and a fact not declared is absent from `input.resource` (undefined for the
//! policy, never an empty stand-in). The gate's own after-effects (stage history, webhook events) add what they
//! read, whatever the bundle says.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::mlflow::routes::{rpc, Operation};
use crate::policy::Bundle;

/// One group of facts, named as in `data.gate.facts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `registered-models/get`: `registered_model` (tags, aliases, latest versions, creator) and `alias_holder`.
    RegisteredModel,
    /// `model-versions/get`: `model_version` and the review workflow's `approvals`, `open_requests`, `activity`.
    ModelVersion,
    /// `runs/get` of the version's (or new version's) run, and the lineage check: `source_run`, `lineage`,
    /// `source_matches_run` (needs the version, fetched for it).
    SourceRun,
    /// The fingerprints of the version's files, when the version has approvals (needs the version).
    Files,
}

impl Fact {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn from_name(name: &str) -> Option<Fact> {
        Some(match name {
            "registered_model" => Fact::RegisteredModel,
            "model_version" => Fact::ModelVersion,
            "source_run" => Fact::SourceRun,
            "files" => Fact::Files,
            _ => return None,
        })
    }
}

/// A set of facts to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs(u8);

impl Needs {
    /// Every fact (an undeclared RPC, the review workflow, `explain` without a bundle).
    pub const ALL: Needs = Needs(0b1111);
    /// No registry fact: `input.resource` is the target alone.
    pub const NONE: Needs = Needs(0);

    /// Whether `fact` is looked up. The version is looked up for every fact that is derived from it.
    pub fn has(self, fact: Fact) -> bool {
        let derived = matches!(fact, Fact::ModelVersion) && self.0 & (Fact::SourceRun.bit() | Fact::Files.bit()) != 0;
        self.0 & fact.bit() != 0 || derived
    }

    fn with(self, other: Needs) -> Needs {
        Needs(self.0 | other.0)
    }

    /// What the gate itself reads after a permitted mutation: the version's stage and history (stage history,
    /// transition events) and the alias holder (alias events).
    fn gate_reads(op: &Operation) -> Needs {
        match op.rpc {
            rpc::TRANSITION_MODEL_VERSION_STAGE
            | rpc::SET_REGISTERED_MODEL_ALIAS
            | rpc::DELETE_REGISTERED_MODEL_ALIAS => Needs(Fact::RegisteredModel.bit() | Fact::ModelVersion.bit()),
            _ if op.workflow => Needs::ALL,
            _ => Needs::NONE,
        }
    }
}

/// The declarations of one bundle: RPC -> facts.
#[derive(Debug, Default)]
pub struct Declared {
    by_rpc: HashMap<String, Needs>,
}

impl Declared {
    /// Reads `data.gate.facts` of a bundle's data. Entries that are not lists of known fact names are ignored
    /// (with a warning), so that RPC keeps every fact: a typo never narrows.
    pub fn from_data(data: &serde_json::Value) -> Declared {
        let mut by_rpc = HashMap::new();
        let Some(facts) = data.pointer("/gate/facts").and_then(|f| f.as_object()) else {
            return Declared { by_rpc };
        };
        for (rpc, list) in facts {
            let names: Option<Option<Vec<Fact>>> =
                list.as_array().map(|l| l.iter().map(|n| n.as_str().and_then(Fact::from_name)).collect());
            match names {
                Some(Some(names)) => {
                    by_rpc.insert(rpc.clone(), Needs(names.into_iter().fold(0, |bits, f| bits | f.bit())));
                }
                Some(None) => tracing::warn!(%rpc, "data.gate.facts: unknown fact name; every fact is looked up"),
                None => tracing::warn!(%rpc, "data.gate.facts: not a list; every fact is looked up"),
            }
        }
        Declared { by_rpc }
    }

    /// The facts to look up for an operation: its declaration (or every fact) plus what the gate reads itself.
    pub fn needs(&self, op: &Operation) -> Needs {
        let declared = self.by_rpc.get(op.rpc).copied().unwrap_or(Needs::ALL);
        declared.with(Needs::gate_reads(op))
    }

    /// The RPCs the bundle declares.
    pub fn rpcs(&self) -> impl Iterator<Item = &str> {
        self.by_rpc.keys().map(String::as_str)
    }

    /// Whether the bundle declared anything.
    pub fn is_empty(&self) -> bool {
        self.by_rpc.is_empty()
    }
}

/// The declarations of the bundle in force, read once per bundle (reloads swap it).
#[derive(Default)]
pub struct PerBundle {
    current: ArcSwapOption<(u64, Declared)>,
}

impl PerBundle {
    /// The facts `bundle` reads for `op`.
    pub fn needs(&self, bundle: &Bundle, op: &Operation) -> Needs {
        let current = self.current.load();
        if let Some(entry) = current.as_ref().filter(|e| e.0 == bundle.generation()) {
            return entry.1.needs(op);
        }
        let declared = declared_by(bundle);
        let needs = declared.needs(op);
        self.current.store(Some(Arc::new((bundle.generation(), declared))));
        needs
    }
}

/// The declarations of a bundle (its data, `data.gate.facts`).
pub fn declared_by(bundle: &Bundle) -> Declared {
    let data = bundle.engine().get_data();
    match data.to_json_str().ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()) {
        Some(json) => Declared::from_data(&json),
        None => Declared::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::routes::Resource;

    fn op(name: &'static str) -> Operation {
        Operation::plain(name, false, Resource::RegisteredModel)
    }

    #[test]
    fn undeclared_rpcs_and_bundles_get_every_fact() {
        let none = Declared::from_data(&serde_json::json!({"roles": {}}));
        assert!(none.is_empty());
        assert_eq!(none.needs(&op("SetRegisteredModelTag")), Needs::ALL);
        let some = Declared::from_data(&serde_json::json!({"gate": {"facts": {"SetRegisteredModelTag": []}}}));
        assert_eq!(some.needs(&op("SetRegisteredModelTag")), Needs::NONE);
        assert_eq!(some.needs(&op("DeleteModelVersion")), Needs::ALL);
    }

    #[test]
    fn a_malformed_declaration_never_narrows() {
        let d = Declared::from_data(&serde_json::json!({"gate": {"facts": {
            "SetRegisteredModelTag": ["registered_modle"], "DeleteRegisteredModelTag": "none"}}}));
        assert_eq!(d.needs(&op("SetRegisteredModelTag")), Needs::ALL);
        assert_eq!(d.needs(&op("DeleteRegisteredModelTag")), Needs::ALL);
    }

    #[test]
    fn derived_facts_bring_the_version_and_the_gate_adds_what_it_reads() {
        let d = Declared::from_data(&serde_json::json!({"gate": {"facts": {
            "UpdateModelVersion": ["source_run"], "TransitionModelVersionStage": []}}}));
        let n = d.needs(&op("UpdateModelVersion"));
        assert!(n.has(Fact::SourceRun) && n.has(Fact::ModelVersion) && !n.has(Fact::RegisteredModel));
        let t = d.needs(&op(rpc::TRANSITION_MODEL_VERSION_STAGE));
        assert!(t.has(Fact::ModelVersion) && t.has(Fact::RegisteredModel) && !t.has(Fact::SourceRun));
        let every = [Fact::RegisteredModel, Fact::ModelVersion, Fact::SourceRun, Fact::Files];
        assert!(every.iter().all(|f| Needs::ALL.has(*f)) && every.iter().all(|f| !Needs::NONE.has(*f)));
    }
}
