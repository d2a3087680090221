//! docs/INTERFACES.md lists every command of the binary: each subcommand `mlflow-gate --help` (and the help of each
//! command group) prints must appear there as `mlflow-gate <command>`, so a new command cannot go undocumented.

use std::process::Command;

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mlflow-gate")).args(args).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_is_in_the_interfaces_doc() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/INTERFACES.md")).unwrap();
    let mut missing = Vec::new();
    let top = subcommands(&[]);
    assert!(top.len() >= 10, "parsed too few commands from --help: {top:?}");
    for command in top {
        let nested = subcommands(&[&command]);
        let full: Vec<String> = if nested.is_empty() {
            vec![command.clone()]
        } else {
            nested.iter().map(|n| format!("{command} {n}")).collect()
        };
        missing.extend(full.into_iter().filter(|c| !doc.contains(&format!("`mlflow-gate {c}"))));
    }
    assert!(missing.is_empty(), "docs/INTERFACES.md does not document: {missing:?}");
}
