"""Races between replicas, on the fleet of test_fleet_postgres (MLflow on PostgreSQL, two MLflow servers, a gate in
front of each): the same version approved, transitioned and aliased through both gates at the same instant, a
promotion racing with the change that voids its approval, and two CI promotions of two versions of one model at
once. Each race runs a bounded number of rounds (and stops early at a time budget); every round must end in a state
the policy allows. Stage-history entries lost to concurrent writers are issue 12's (the history representation),
so these tests assert on stages, aliases, approvals and the one-Production rule, not on the history's length."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from helpers import http, new_model_version, upstream, upstream_stage, workflow
from support.fleet import Fleet, people, promote, version_of, via  # noqa: F401 (fixtures)
from support.ops import mlflow_env  # noqa: F401 (a fixture)

ROUNDS = 6
BUDGET_SECS = 90  # per test: later rounds are skipped past it (each round is a handful of HTTP calls)


def at_once(*calls: Callable[[], object]) -> list[object]:
    """Runs the calls in threads released together by a barrier; returns their results in order."""
    barrier = threading.Barrier(len(calls))

    def released(call):
        barrier.wait(10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(60) for f in [pool.submit(released, c) for c in calls]]


def rounds() -> range:
    """Round numbers, cut short once the budget is spent (at least two rounds run)."""
    started = time.monotonic()
    for i in range(ROUNDS):
        if i >= 2 and time.monotonic() - started > BUDGET_SECS:
            return
        yield i


def in_production(fleet: Fleet, name: str) -> list[str]:
    found = upstream(fleet.mlflow(0), "/api/2.0/mlflow/model-versions/search", filter=f"name='{name}'")
    return sorted(v["version"] for v in found["model_versions"] if v["current_stage"] == "Production")


def staged_and_requested(fleet: Fleet, via, people, name: str | None = None) -> tuple[str, str]:
    """A version in Staging with an open request for Production (made through gate A; staged through gate B)."""
    name, version = new_model_version(via(0, people["alice"]), name)
    assert promote(fleet, 1, people["ci"], name, version, "Staging").status_code == 200
    asked = workflow(fleet.gate(0).url, people["alice"], "create", name=name, version=version, stage="Production")
    assert asked.status_code == 200, asked.text
    return name, version


def approve(fleet: Fleet, i: int, token: str, name: str, version: str):
    return workflow(fleet.gate(i).url, token, "approve", name=name, version=version, stage="Production",
                    archive_existing_versions=True)


def activities(fleet: Fleet, token: str, name: str, version: str) -> list[tuple[str, str]]:
    listed = http(fleet.gate(1).url, "GET", "/api/2.0/mlflow/transition-requests/list", token,
                  params={"name": name, "version": version, "include_history": "true"})
    assert listed.status_code == 200, listed.text
    return [(a["activity_type"], a["user_id"]) for a in listed.json()["requests"]]


def test_concurrent_approvals_through_both_gates_are_all_recorded(fleet, via, people):
    for _ in rounds():
        name, version = staged_and_requested(fleet, via, people)
        results = at_once(lambda: approve(fleet, 0, people["bob"], name, version),
                          lambda: approve(fleet, 1, people["dave"], name, version))
        # An approval closes the request: the one that comes second finds no open request (400 INVALID_STATE),
        # unless both read it open. Either way every approval answered 200 is recorded (one tag per activity, so
        # neither overwrites the other), and no refused one is.
        statuses = [r.status_code for r in results]
        assert sorted(statuses) in ([200, 200], [200, 400]), [r.text for r in results]
        for refused in (r for r in results if r.status_code == 400):
            assert refused.json()["error_code"] == "INVALID_STATE", refused.text
        approved = {who for who, r in zip(("bob", "dave"), results) if r.status_code == 200}
        assert sorted(activities(fleet, people["alice"], name, version)) == sorted(
            [("REQUESTED_TRANSITION", "alice")] + [("APPROVED_REQUEST", who) for who in approved])
        assert upstream_stage(fleet.mlflow(0), name, version) == "Staging"
        # CI may now promote, through either gate.
        assert promote(fleet, 1, people["ci"], name, version, "Production").status_code == 200


def test_concurrent_transitions_of_one_version_through_both_gates_agree(fleet, via, people):
    for _ in rounds():
        name, version = staged_and_requested(fleet, via, people)
        assert approve(fleet, 1, people["bob"], name, version).status_code == 200
        results = at_once(lambda: promote(fleet, 0, people["ci"], name, version, "Production"),
                          lambda: promote(fleet, 1, people["ci"], name, version, "Production"))
        # The second is Production -> Production: MLflow accepts it, and the policy allows CI's move to Production
        # from Production (a re-promotion) as from Staging. Either way one version holds the stage.
        statuses = sorted(r.status_code for r in results)
        assert statuses in ([200, 200], [200, 403]), [r.text for r in results]
        assert in_production(fleet, name) == [version]


def test_concurrent_alias_moves_leave_the_alias_on_one_of_the_versions(fleet, via, people):
    for _ in rounds():
        name, first = new_model_version(via(0, people["alice"]))
        _, second = new_model_version(via(1, people["alice"]), name)
        results = at_once(
            lambda: http(fleet.gate(0).url, "POST", "/api/2.0/mlflow/registered-models/alias", people["alice"],
                         json={"name": name, "alias": "candidate", "version": first}),
            lambda: http(fleet.gate(1).url, "POST", "/api/2.0/mlflow/registered-models/alias", people["alice"],
                         json={"name": name, "alias": "candidate", "version": second}))
        # MLflow inserts a new alias without ON CONFLICT: when both insert at once, PostgreSQL's unique key refuses
        # one, and MLflow answers it 400 (the gate passes MLflow's answer on, and emits no event for it). A move of
        # an existing alias is an UPDATE and both succeed (the last one holds).
        statuses = [r.status_code for r in results]
        assert sorted(statuses) in ([200, 200], [200, 400]), [r.text for r in results]
        aliased = [http(m.url, "GET", "/api/2.0/mlflow/registered-models/alias", params={"name": name,
                                                                                        "alias": "candidate"})
                   for m in fleet.mlflows]
        held = {a.json()["model_version"]["version"] for a in aliased}
        succeeded = {v for v, status in zip((first, second), statuses) if status == 200}
        assert len(held) == 1 and held <= succeeded, (held, statuses)
        fleet.recorder.wait_for(name, {("MODEL_VERSION_ALIAS_SET", v) for v in succeeded}, lambda d: d.event.get("version"))
        emitted = {d.event["version"] for d in fleet.recorder.about(name) if d.event["event"] == "MODEL_VERSION_ALIAS_SET"}
        assert emitted == succeeded, (emitted, statuses)


def test_promotion_racing_with_the_change_that_voids_its_approval_ends_consistent(fleet, via, people):
    outcomes = []
    for _ in rounds():
        name, version = staged_and_requested(fleet, via, people)
        assert approve(fleet, 1, people["bob"], name, version).status_code == 200
        run_id = version_of(fleet, 0, name, version)["run_id"]
        voiding = via(1, people["alice"])
        promoted, _ = at_once(lambda: promote(fleet, 0, people["ci"], name, version, "Production"),
                              lambda: voiding.log_metric(run_id, "val_auc", 0.95))
        stage = upstream_stage(fleet.mlflow(1), name, version)
        if promoted.status_code == 200:
            # The gate read the evidence before the metric landed: the approval held when it was evaluated.
            assert stage == "Production"
        else:
            assert promoted.status_code == 403 and "approval" in promoted.text, promoted.text
            assert stage == "Staging"
        outcomes.append(promoted.status_code)
        # Afterwards the approval is void on every gate: nothing more is promoted with it.
        again = promote(fleet, 1, people["ci"], name, version, "Production")
        assert again.status_code == 403, again.text
        assert stage == "Production" or "approval" in again.text, again.text
    assert set(outcomes) <= {200, 403}


def test_two_ci_promotions_of_two_versions_at_once_leave_one_production_version(fleet, via, people):
    for _ in rounds():
        name, first = staged_and_requested(fleet, via, people)
        _, second = staged_and_requested(fleet, via, people, name)
        for version in (first, second):
            assert approve(fleet, 1, people["bob"], name, version).status_code == 200
        results = at_once(lambda: promote(fleet, 0, people["ci"], name, first, "Production"),
                          lambda: promote(fleet, 1, people["ci"], name, second, "Production"))
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        assert len(in_production(fleet, name)) == 1, in_production(fleet, name)


def test_two_approvals_that_promote_two_versions_at_once_leave_one_production_version(fleet, via, people, gate_keys):
    # A reviewer who is also the CI identity: under the default bundle its approval performs the transition
    # (Databricks' semantics), through the same promotion lock as a forwarded transition.
    approver = gate_keys.token("ci-reviewer", groups=["mlflow-ci", "ml-senior"])
    for _ in rounds():
        name, first = staged_and_requested(fleet, via, people)
        _, second = staged_and_requested(fleet, via, people, name)
        results = at_once(lambda: approve(fleet, 0, approver, name, first),
                          lambda: approve(fleet, 1, approver, name, second))
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        applied = [r.json()["activity"].get("system_comment", "") for r in results]
        assert all("transitioned to Production" in c for c in applied), applied
        assert len(in_production(fleet, name)) == 1, in_production(fleet, name)
