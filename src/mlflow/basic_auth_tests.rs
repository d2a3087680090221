use super::*;

const ROLE_SCHEMA: &str = "
CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE, password_hash TEXT, is_admin BOOLEAN);
CREATE TABLE roles (id INTEGER PRIMARY KEY, name TEXT NOT NULL, workspace TEXT NOT NULL, description TEXT);
CREATE TABLE role_permissions (id INTEGER PRIMARY KEY, role_id INTEGER NOT NULL, resource_type TEXT NOT NULL,
  resource_pattern TEXT NOT NULL, permission TEXT NOT NULL);
CREATE TABLE user_role_assignments (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, role_id INTEGER NOT NULL);
";

fn db(sql: &str) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(sql).unwrap();
    conn
}

fn opts(prefix: &str, roles_as_groups: bool) -> Options {
    Options { subject_prefix: prefix.to_string(), roles_as_groups }
}

fn lines(p: &Plan) -> Vec<String> {
    p.grants.iter().map(|g| format!("{} {} {} {}", g.object, g.subject, g.level, g.source)).collect()
}

#[test]
fn user_permissions_of_synthetic_roles_become_user_grants_with_the_prefix() {
    let conn = db(&format!(
        "{ROLE_SCHEMA}
        INSERT INTO users VALUES (1, 'admin', '', 1), (2, 'alice', '', 0);
        INSERT INTO roles VALUES (10, '__user_2__', 'default', NULL);
        INSERT INTO user_role_assignments VALUES (1, 2, 10);
        INSERT INTO role_permissions VALUES (1, 10, 'experiment', '7', 'EDIT'),
          (2, 10, 'registered_model', 'fraud', 'READ'),
          (3, 10, 'prompt', 'qa-prompt', 'MANAGE');"
    ));
    let p = plan(&conn, &opts("corp|", false)).unwrap();
    assert_eq!(
        lines(&p),
        [
            "experiment 7 corp|alice EDIT user permission",
            "registered model \"fraud\" corp|alice READ user permission",
            "registered model \"qa-prompt\" corp|alice MANAGE user permission",
        ]
    );
    assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
    assert!(p.skipped[0].what.contains("admin is an MLflow admin"));
}

const NAMED_ROLES: &str = "
        INSERT INTO users VALUES (2, 'alice', '', 0), (3, 'bob', '', 0);
        INSERT INTO roles VALUES (20, 'fraud-team', 'default', NULL), (21, 'empty', 'default', NULL),
          (22, '__user_3__', 'team-ws', NULL);
        INSERT INTO user_role_assignments VALUES (1, 2, 20), (2, 3, 20), (3, 3, 22);
        INSERT INTO role_permissions VALUES (1, 20, 'experiment', '5', 'use'), (2, 20, 'experiment', '*', 'READ'),
          (3, 20, 'scorer', '5/s', 'EDIT'), (4, 20, 'workspace', '*', 'USE'), (5, 21, 'experiment', '6', 'READ'),
          (6, 22, 'experiment', '9', 'READ'), (7, 20, 'gateway_endpoint', 'e-1', 'USE'),
          (8, 20, 'gateway_secret', 's-1', 'READ');";

#[test]
fn named_roles_fan_out_to_their_users_and_what_cannot_map_is_listed_with_what_to_do() {
    let conn = db(&format!("{ROLE_SCHEMA}{NAMED_ROLES}"));
    let p = plan(&conn, &opts("", false)).unwrap();
    assert_eq!(
        lines(&p),
        [
            "experiment 5 alice USE role fraud-team",
            "experiment 5 bob USE role fraud-team",
            "gateway endpoint e-1 alice USE role fraud-team",
            "gateway endpoint e-1 bob USE role fraud-team",
            "experiment 9 bob READ user permission",
        ]
    );
    assert_eq!(p.grants.last().and_then(|g| g.workspace.as_deref()), Some("team-ws"));
    assert_eq!(
        p.grants.last().map(ToString::to_string).as_deref(),
        Some("READ on experiment 9 in workspace team-ws to user bob (basic-auth user bob, user permission)")
    );
    let why: Vec<&str> = p.skipped.iter().map(|s| s.why.as_str()).collect();
    assert_eq!(p.skipped.len(), 5, "{:#?}", p.skipped);
    assert!(why.contains(
        &"a type-wide pattern: add the pattern grant {\"group\":\"fraud-team\",\"type\":\"experiment\",\"name\":\"*\",\
          \"level\":\"READ\"} to data.permissions.patterns in the policy data"
    ));
    assert!(why.iter().any(|w| w.starts_with("a workspace-wide permission has no grant: add pattern grants")));
    assert!(why.iter().any(|w| w.contains("grant EDIT on experiment 5 instead if")));
    assert!(why.iter().any(|w| w.contains("assigned to no user") && w.contains("--roles-as-groups")));
    assert!(why.iter().any(|w| w.contains("secrets and model definitions")));
}

#[test]
fn roles_as_groups_grant_a_named_role_to_its_group_and_users_keep_their_own() {
    let conn = db(&format!("{ROLE_SCHEMA}{NAMED_ROLES}"));
    let p = plan(&conn, &opts("corp|", true)).unwrap();
    let shown: Vec<String> = p.grants.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "USE on experiment 5 to group fraud-team (role fraud-team; the IdP must put its users alice, bob in the \
             group fraud-team)",
            "USE on gateway endpoint e-1 to group fraud-team (role fraud-team; the IdP must put its users alice, bob \
             in the group fraud-team)",
            "READ on experiment 6 to group empty (role empty; no basic-auth user has the role now: whoever the IdP \
             puts in the group empty gets it)",
            "READ on experiment 9 in workspace team-ws to user corp|bob (basic-auth user bob, user permission)",
        ]
    );
    assert!(p.grants.iter().take(3).all(|g| g.kind == Grantee::Group && g.username.is_empty()));
    assert_eq!(p.skipped.len(), 4, "{:?}", p.skipped);
}

#[test]
fn legacy_per_resource_tables_are_read_when_there_are_no_role_tables() {
    let conn = db("
        CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE, password_hash TEXT, is_admin BOOLEAN);
        CREATE TABLE experiment_permissions (id INTEGER PRIMARY KEY, experiment_id TEXT, user_id INTEGER,
          permission TEXT);
        CREATE TABLE registered_model_permissions (id INTEGER PRIMARY KEY, name TEXT, user_id INTEGER, permission TEXT);
        CREATE TABLE scorer_permissions (id INTEGER PRIMARY KEY, experiment_id TEXT, scorer_name TEXT, user_id INTEGER,
          permission TEXT);
        INSERT INTO users VALUES (2, 'alice', '', 0);
        INSERT INTO experiment_permissions VALUES (1, '3', 2, 'NO_PERMISSIONS'), (2, '4', 99, 'READ');
        INSERT INTO registered_model_permissions VALUES (1, 'm', 2, 'MANAGE');
        INSERT INTO scorer_permissions VALUES (1, '3', 's', 2, 'READ');");
    let p = plan(&conn, &opts("", false)).unwrap();
    assert_eq!(
        lines(&p),
        [
            "experiment 3 alice NO_PERMISSIONS experiment_permissions",
            "registered model \"m\" alice MANAGE registered_model_permissions"
        ]
    );
    assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
    assert!(p
        .skipped
        .iter()
        .any(|s| s.what.contains("scorer_permissions") && s.why.contains("grant on their experiments instead")));
}

#[test]
fn a_database_without_users_is_refused() {
    let conn = db("CREATE TABLE other (id INTEGER);");
    assert!(matches!(plan(&conn, &opts("", false)), Err(PlanError::NotBasicAuth)));
}
