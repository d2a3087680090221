//! Reading an MLflow basic-auth permissions database (its sqlite file) into the grants the gate would write, for
//! `mlflow-gate grants migrate` (a leaf of the route layer: no requests, only the plan).
//!
//! MLflow 3.17 keeps every permission in `role_permissions` (role x resource type x resource pattern x permission):
//! a per-object grant of one user hangs off that user's synthetic role `__user_<id>__`, and named roles are
//! assigned to users in `user_role_assignments`. Databases made before the role tables keep the per-resource tables
//! `experiment_permissions` and `registered_model_permissions`; those are read only when `role_permissions` is
//! absent (from 3.17 on they are a paused snapshot MLflow no longer reads). What maps to a per-object grant is
//! planned: experiments, registered models and prompts, and AI-gateway endpoints, in the role's workspace (written
//! with that `X-MLFLOW-WORKSPACE`); a named role's grant becomes one user grant per user assigned to it, or, with
//! `roles_as_groups`, one group grant to the group named like the role. Everything else (type-wide patterns,
//! workspace-wide, scorer, secret and model-definition permissions, admins, unknown levels) is listed as not
//! migrated, with a reason that says what to do instead, never dropped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::permission::Grantee;

/// The permission names the gate's grants take (the same as MLflow's).
pub const LEVELS: &[&str] = &["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"];

/// MLflow's default workspace (the only one the migration writes to).
const DEFAULT_WORKSPACE: &str = "default";

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot read the basic-auth database {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("{path} is not an MLflow basic-auth database (it has no `users` table)")]
    NotBasicAuth { path: String },
}

/// The object a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Object {
    /// An experiment, by id.
    Experiment(String),
    /// A registered model (or prompt), by name.
    Model(String),
    /// An AI-gateway endpoint, by id (`e-...`).
    GatewayEndpoint(String),
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Experiment(id) => write!(f, "experiment {id}"),
            Object::Model(name) => write!(f, "registered model {name:?}"),
            Object::GatewayEndpoint(id) => write!(f, "gateway endpoint {id}"),
        }
    }
}

/// One grant to write: `subject` (a user, or a group) gets `level` on `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub object: Object,
    /// A user grant or (a named role, with `roles_as_groups`) a group grant.
    pub kind: Grantee,
    /// The gate's subject (the token `sub`: the basic-auth username with the subject prefix), or the group's name
    /// (the role's name).
    pub subject: String,
    /// The basic-auth username it came from (empty for a group grant).
    pub username: String,
    /// For a group grant: the basic-auth users the role is assigned to (the IdP must put them in the group).
    pub members: Vec<String>,
    pub level: String,
    /// Where it came from (`user permission`, `role <name>`, `experiment_permissions`, ...).
    pub source: String,
    /// The MLflow workspace of the object, when not the default one (the grant is written with that
    /// `X-MLFLOW-WORKSPACE`).
    pub workspace: Option<String>,
}

impl std::fmt::Display for Grant {
    /// `LEVEL on OBJECT [in workspace W] to user S (basic-auth user U, SOURCE)`, or `... to group G (SOURCE; ...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.level, self.object)?;
        if let Some(ws) = &self.workspace {
            write!(f, " in workspace {ws}")?;
        }
        let (who, source) = (&self.subject, &self.source);
        match self.kind {
            Grantee::User => write!(f, " to user {who} (basic-auth user {}, {source})", self.username),
            Grantee::Group if self.members.is_empty() => write!(
                f,
                " to group {who} ({source}; no basic-auth user has the role now: whoever the IdP puts in the group \
                 {who} gets it)"
            ),
            Grantee::Group => write!(
                f,
                " to group {g} ({}; the IdP must put its users {} in the group {g})",
                self.source,
                self.members.join(", "),
                g = self.subject
            ),
        }
    }
}

/// Something in the database the gate's grants cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

/// The migration plan: the grants to write and what is not migrated.
#[derive(Debug, Default)]
pub struct Plan {
    pub grants: Vec<Grant>,
    pub skipped: Vec<Skipped>,
}

impl Plan {
    fn skip(&mut self, what: String, why: &str) {
        self.skipped.push(Skipped { what, why: why.to_string() });
    }
}

/// How basic-auth's users and roles become the gate's grantees.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prepended to each basic-auth username to make the gate's subject (the token `sub`).
    pub subject_prefix: String,
    /// A named role's grant becomes one group grant (the group named like the role) instead of one user grant per
    /// user assigned to it.
    pub roles_as_groups: bool,
}

/// Reads the database at `path` (read-only) into a plan; a username `u` becomes the subject `subject_prefix + u`.
pub fn read(path: &Path, options: &Options) -> Result<Plan, MigrateError> {
    let shown = path.display().to_string();
    let err = |source| MigrateError::Sqlite { path: shown.clone(), source };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    plan(&conn, options).map_err(|e| match e {
        PlanError::Sqlite(source) => err(source),
        PlanError::NotBasicAuth => MigrateError::NotBasicAuth { path: shown.clone() },
    })
}

#[derive(Debug)]
enum PlanError {
    Sqlite(rusqlite::Error),
    NotBasicAuth,
}

impl From<rusqlite::Error> for PlanError {
    fn from(e: rusqlite::Error) -> Self {
        PlanError::Sqlite(e)
    }
}

struct User {
    name: String,
    admin: bool,
}

fn plan(conn: &Connection, options: &Options) -> Result<Plan, PlanError> {
    let tables: BTreeSet<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if !tables.contains("users") {
        return Err(PlanError::NotBasicAuth);
    }
    let users: BTreeMap<i64, User> = conn
        .prepare("SELECT id, username, COALESCE(is_admin, 0) FROM users ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, User { name: r.get(1)?, admin: r.get::<_, i64>(2)? != 0 })))?
        .collect::<Result<_, _>>()?;
    let mut out = Plan::default();
    for u in users.values().filter(|u| u.admin) {
        out.skip(
            format!("user {} is an MLflow admin", u.name),
            "admins are not grants: make the subject a gate admin (the policy data's admin groups)",
        );
    }
    if tables.contains("role_permissions") && tables.contains("roles") {
        from_roles(conn, &users, options, &mut out)?;
    } else {
        from_legacy(conn, &tables, &users, &options.subject_prefix, &mut out)?;
    }
    Ok(out)
}

/// Who a permission is for, as a pattern grant of the policy data names it (`"user": "<sub>"` / `"group": "<g>"`).
struct Who<'a> {
    kind: Grantee,
    name: &'a str,
}

impl Who<'_> {
    fn pattern(&self, kind: &str, level: &str, workspace: &str) -> String {
        let who = if self.kind == Grantee::User { "user" } else { "group" };
        let mut p = serde_json::json!({who: self.name, "type": kind, "name": "*", "level": level});
        if workspace != DEFAULT_WORKSPACE {
            p["workspace"] = serde_json::Value::String(workspace.to_string());
        }
        p.to_string()
    }
}

/// The object a resource type and a concrete pattern name, or why there is none (what to do instead, with the
/// pattern grant to add to `data.permissions.patterns` where one expresses it).
fn object(resource_type: &str, pattern: &str, level: &str, workspace: &str, who: &Who<'_>) -> Result<Object, String> {
    let (object, kind) = match resource_type {
        "experiment" => (Object::Experiment(pattern.to_string()), "experiment"),
        "registered_model" | "prompt" => (Object::Model(pattern.to_string()), "registered_model"),
        "gateway_endpoint" => (Object::GatewayEndpoint(pattern.to_string()), "gateway_endpoint"),
        "workspace" => {
            return Err(format!(
                "a workspace-wide permission has no grant: add pattern grants to data.permissions.patterns in the \
                 policy data, {} and the same with \"type\" \"registered_model\" and \"gateway_endpoint\"",
                who.pattern("experiment", level, workspace)
            ))
        }
        "scorer" | "scorer_version" => {
            let experiment = pattern.split('/').next().filter(|e| !e.is_empty() && *e != "*");
            return Err(match experiment {
                Some(e) => format!(
                    "the gate's scorers take their experiment's permissions: grant {level} on experiment {e} \
                     instead if the grantee should have it on the whole experiment (its runs, traces and scorers)"
                ),
                None => "the gate's scorers take their experiment's permissions: grant on the experiments instead"
                    .to_string(),
            });
        }
        "gateway_secret" | "gateway_model_definition" => {
            return Err("the gate keeps no per-resource grants on gateway secrets and model definitions (they have \
                 no tags): admins manage them (operations.admin_mutations), engineers read their metadata; make the \
                 user a gate admin if they must change them"
                .to_string())
        }
        _ => {
            return Err("the gate's grants cover experiments, registered models and prompts, and AI-gateway \
                 endpoints only"
                .to_string())
        }
    };
    if pattern == "*" || pattern.is_empty() {
        return Err(format!(
            "a type-wide pattern: add the pattern grant {} to data.permissions.patterns in the policy data",
            who.pattern(kind, level, workspace)
        ));
    }
    Ok(object)
}

fn level(permission: &str) -> Option<String> {
    let up = permission.to_ascii_uppercase();
    LEVELS.contains(&up.as_str()).then_some(up)
}

fn synthetic(role: &str) -> bool {
    role.strip_prefix("__user_")
        .and_then(|r| r.strip_suffix("__"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

fn from_roles(
    conn: &Connection,
    users: &BTreeMap<i64, User>,
    options: &Options,
    out: &mut Plan,
) -> Result<(), PlanError> {
    let prefix = &options.subject_prefix;
    let mut assigned: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    if conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user_role_assignments'")?.exists([])?
    {
        let rows = conn
            .prepare("SELECT role_id, user_id FROM user_role_assignments ORDER BY id")?
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (role, user) in rows {
            assigned.entry(role).or_default().push(user);
        }
    }
    let rows = conn
        .prepare(
            "SELECT r.id, r.name, r.workspace, p.resource_type, p.resource_pattern, p.permission \
             FROM role_permissions p JOIN roles r ON r.id = p.role_id ORDER BY r.id, p.id",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (role_id, role, workspace, rtype, pattern, permission) in rows {
        let user_role = synthetic(&role);
        let source = if user_role { "user permission".to_string() } else { format!("role {role}") };
        let what = format!("{permission} on {rtype} {pattern:?} ({source}, workspace {workspace})");
        let Some(level) = level(&permission) else {
            out.skip(what, "not a permission level the gate knows");
            continue;
        };
        let members: Vec<&User> = assigned.get(&role_id).into_iter().flatten().filter_map(|id| users.get(id)).collect();
        let as_group = !user_role && options.roles_as_groups;
        // A synthetic role's user is named by its id (`__user_<id>__`), whether or not the role is assigned.
        let owner = role.strip_prefix("__user_").and_then(|r| r.strip_suffix("__")).and_then(|id| id.parse().ok());
        let subject =
            owner.and_then(|id: i64| users.get(&id)).map(|u| format!("{prefix}{}", u.name)).unwrap_or_default();
        let who = if as_group || !user_role {
            Who { kind: Grantee::Group, name: &role }
        } else {
            Who { kind: Grantee::User, name: &subject }
        };
        let obj = match object(&rtype, &pattern, &level, &workspace, &who) {
            Ok(o) => o,
            Err(why) => {
                out.skipped.push(Skipped { what, why });
                continue;
            }
        };
        let ws = (workspace != DEFAULT_WORKSPACE).then(|| workspace.clone());
        if as_group {
            out.grants.push(Grant {
                object: obj,
                kind: Grantee::Group,
                subject: role.clone(),
                username: String::new(),
                members: members.iter().map(|u| u.name.clone()).collect(),
                level,
                source,
                workspace: ws,
            });
            continue;
        }
        if members.is_empty() {
            out.skip(
                what,
                "the role is assigned to no user (nothing to grant; --roles-as-groups would grant it to the group \
                 named like the role)",
            );
        }
        for u in members {
            out.grants.push(Grant {
                object: obj.clone(),
                kind: Grantee::User,
                subject: format!("{prefix}{}", u.name),
                username: u.name.clone(),
                members: Vec::new(),
                level: level.clone(),
                source: source.clone(),
                workspace: ws.clone(),
            });
        }
    }
    Ok(())
}

/// The per-resource tables of databases made before the role tables (MLflow < 3.17's RBAC migration).
fn from_legacy(
    conn: &Connection,
    tables: &BTreeSet<String>,
    users: &BTreeMap<i64, User>,
    prefix: &str,
    out: &mut Plan,
) -> Result<(), PlanError> {
    for (table, column, rtype) in [
        ("experiment_permissions", "experiment_id", "experiment"),
        ("registered_model_permissions", "name", "registered_model"),
        ("gateway_endpoint_permissions", "endpoint_id", "gateway_endpoint"),
    ] {
        if !tables.contains(table) {
            continue;
        }
        let rows = conn
            .prepare(&format!("SELECT {column}, user_id, permission FROM {table} ORDER BY id"))?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (pattern, user_id, permission) in rows {
            let what = format!("{permission} on {rtype} {pattern:?} ({table}, user id {user_id})");
            let (Some(u), Some(level)) = (users.get(&user_id), level(&permission)) else {
                out.skip(what, "unknown user or permission level");
                continue;
            };
            let subject = format!("{prefix}{}", u.name);
            let who = Who { kind: Grantee::User, name: &subject };
            match object(rtype, &pattern, &level, DEFAULT_WORKSPACE, &who) {
                Ok(obj) => out.grants.push(Grant {
                    object: obj,
                    kind: Grantee::User,
                    subject: subject.clone(),
                    username: u.name.clone(),
                    members: Vec::new(),
                    level,
                    source: table.to_string(),
                    workspace: None,
                }),
                Err(why) => out.skipped.push(Skipped { what, why }),
            }
        }
    }
    for table in tables.iter().filter(|t| t.ends_with("_permissions")) {
        if matches!(
            table.as_str(),
            "experiment_permissions"
                | "registered_model_permissions"
                | "gateway_endpoint_permissions"
                | "role_permissions"
        ) {
            continue;
        }
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| r.get(0))?;
        if n > 0 {
            let why = match table.as_str() {
                "scorer_permissions" => {
                    "the gate's scorers take their experiment's permissions: grant on their experiments instead"
                }
                "gateway_secret_permissions" | "gateway_model_definition_permissions" => {
                    "the gate keeps no per-resource grants on gateway secrets and model definitions: admins manage \
                     them (operations.admin_mutations)"
                }
                "workspace_permissions" => {
                    "workspace-wide permissions have no grant: add pattern grants with a \"workspace\" to \
                     data.permissions.patterns"
                }
                _ => {
                    "the gate's grants cover experiments, registered models and prompts, and AI-gateway endpoints only"
                }
            };
            out.skip(format!("{n} row(s) of {table}"), why);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "basic_auth_tests.rs"]
mod tests;
