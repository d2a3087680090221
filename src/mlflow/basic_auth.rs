//! Reading an MLflow basic-auth permissions database (its sqlite file) into the grants the gate would write, for
//! `mlflow-gate grants migrate` (a leaf of the route layer: no requests, only the plan).
//!
//! MLflow 3.17 keeps every permission in `role_permissions` (role x resource type x resource pattern x permission):
//! a per-object grant of one user hangs off that user's synthetic role `__user_<id>__`, and named roles are
//! assigned to users in `user_role_assignments`. Databases made before the role tables keep the per-resource tables
//! `experiment_permissions` and `registered_model_permissions`; those are read only when `role_permissions` is
//! absent (from 3.17 on they are a paused snapshot MLflow no longer reads). What maps to a per-object user grant is
//! planned (a named role's grant becomes one grant per user assigned to it); everything else (type-wide patterns,
//! workspace, scorer and gateway permissions, admins, other workspaces, unknown levels) is listed as not migrated,
//! with the reason, never dropped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

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
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Experiment(id) => write!(f, "experiment {id}"),
            Object::Model(name) => write!(f, "registered model {name:?}"),
        }
    }
}

/// One grant to write: `subject` gets `level` on `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub object: Object,
    /// The gate's subject (the token `sub`): the basic-auth username with the subject prefix.
    pub subject: String,
    /// The basic-auth username it came from.
    pub username: String,
    pub level: String,
    /// Where it came from (`user permission`, `role <name>`, `experiment_permissions`, ...).
    pub source: String,
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

/// Reads the database at `path` (read-only) into a plan; a username `u` becomes the subject `subject_prefix + u`.
pub fn read(path: &Path, subject_prefix: &str) -> Result<Plan, MigrateError> {
    let shown = path.display().to_string();
    let err = |source| MigrateError::Sqlite { path: shown.clone(), source };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    plan(&conn, subject_prefix).map_err(|e| match e {
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

fn plan(conn: &Connection, prefix: &str) -> Result<Plan, PlanError> {
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
        from_roles(conn, &users, prefix, &mut out)?;
    } else {
        from_legacy(conn, &tables, &users, prefix, &mut out)?;
    }
    Ok(out)
}

/// The object a resource type and a concrete pattern name, or why there is none.
fn object(resource_type: &str, pattern: &str) -> Result<Object, &'static str> {
    let object = match resource_type {
        "experiment" => Object::Experiment(pattern.to_string()),
        "registered_model" | "prompt" => Object::Model(pattern.to_string()),
        "workspace" => return Err("workspace-wide permissions have no gate grant (use the policy data's defaults)"),
        _ => return Err("the gate's grants cover experiments and registered models (and prompts) only"),
    };
    if pattern == "*" || pattern.is_empty() {
        return Err("a type-wide pattern: express it as a pattern grant in the policy data (data.json)");
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

fn from_roles(conn: &Connection, users: &BTreeMap<i64, User>, prefix: &str, out: &mut Plan) -> Result<(), PlanError> {
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
        let source = if synthetic(&role) { "user permission".to_string() } else { format!("role {role}") };
        let what = format!("{permission} on {rtype} {pattern:?} ({source}, workspace {workspace})");
        if workspace != DEFAULT_WORKSPACE {
            out.skip(what, "only the default workspace is migrated");
            continue;
        }
        let obj = match object(&rtype, &pattern) {
            Ok(o) => o,
            Err(why) => {
                out.skip(what, why);
                continue;
            }
        };
        let Some(level) = level(&permission) else {
            out.skip(what, "not a permission level the gate knows");
            continue;
        };
        let members: Vec<&User> = assigned.get(&role_id).into_iter().flatten().filter_map(|id| users.get(id)).collect();
        if members.is_empty() {
            out.skip(what, "the role is assigned to no user");
        }
        for u in members {
            out.grants.push(Grant {
                object: obj.clone(),
                subject: format!("{prefix}{}", u.name),
                username: u.name.clone(),
                level: level.clone(),
                source: source.clone(),
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
            match object(rtype, &pattern) {
                Ok(obj) => out.grants.push(Grant {
                    object: obj,
                    subject: format!("{prefix}{}", u.name),
                    username: u.name.clone(),
                    level,
                    source: table.to_string(),
                }),
                Err(why) => out.skip(what, why),
            }
        }
    }
    for table in tables.iter().filter(|t| t.ends_with("_permissions")) {
        if matches!(table.as_str(), "experiment_permissions" | "registered_model_permissions" | "role_permissions") {
            continue;
        }
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| r.get(0))?;
        if n > 0 {
            out.skip(
                format!("{n} row(s) of {table}"),
                "the gate's grants cover experiments and registered models only",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "basic_auth_tests.rs"]
mod tests;
