"""Reading and verifying the gate's hash-chained audit log: its records, `mlflow-gate audit verify` with the run's
key, the checkpoints a gate logs, tampered copies."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import GATE_BIN, run_gate

# The audit chain's HMAC key (base64 of 32 random bytes), one per test run; gates read it from this variable.
AUDIT_KEY_ENV = "MLFLOW_GATE_E2E_AUDIT_KEY"
AUDIT_KEY = base64.b64encode(os.urandom(32)).decode()


def audit_records(path: Path, everything: bool = False) -> list[dict]:
    """The decision records of an audit file (with `everything`, also the genesis record that starts a chain)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return records if everything else [r for r in records if r["kind"] == "decision"]


def audit_verify(*files: Path, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`mlflow-gate audit verify` with the run's audit key (and `args`, e.g. ("--checkpoint", ...))."""
    return subprocess.run([str(GATE_BIN), "audit", "verify", "--key-env", AUDIT_KEY_ENV, *args, *map(str, files)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, AUDIT_KEY_ENV: AUDIT_KEY})


def logged_checkpoints(log: Path) -> list[dict]:
    """The audit checkpoints a gate published on its process log (JSON lines; the checkpoint is a JSON string)."""
    found = []
    for line in log.read_text().splitlines():
        try:
            fields = json.loads(line).get("fields", {})
        except (ValueError, AttributeError):
            continue
        if fields.get("message") == "audit checkpoint":
            found.append(json.loads(fields["checkpoint"]))
    return found


def bundle_revision(config: Path) -> str:
    """The policy bundle revision of a gate config, as `mlflow-gate check` reports it."""
    out = run_gate("check", "--config", str(config))
    match = re.search(r"revision (\S+?)[;)]", out)
    assert match, out
    return match.group(1)


def tampered(source: Path, directory: Path, name: str, edit: Callable[[list[str]], None]) -> Path:
    lines = source.read_text().splitlines()
    edit(lines)
    copy = directory / name
    copy.write_text("\n".join(lines) + "\n")
    return copy
