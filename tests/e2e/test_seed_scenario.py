"""The story the project exists for, against the real MLflow through the gate with the default policy bundle:
nothing reaches Production without passing its evaluation gate, a review by someone other than its author, and
the CI identity; on-call can roll back in an emergency, and that is flagged."""

from __future__ import annotations

from helpers import approve_for, denied, train_and_register, upstream, upstream_stage, workflow

MODEL = "fraud-detector"


def test_fraud_detector_story(gate, mlflow_server, client_as, gate_keys):
    alice, bob = gate_keys.token("alice"), gate_keys.token("bob", groups=["ml-senior"])
    ci, carol = gate_keys.token("ci-bot", groups=["mlflow-ci"]), gate_keys.token("carol", groups=["ml-oncall"])

    # 1. An engineer registers v1 from a run with good metrics.
    client_as(alice)
    v1 = train_and_register(MODEL, experiment="fraud", val_auc=0.91)
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=MODEL, version=v1)["model_version"]
    assert mv["source"].startswith("models:/m-")

    # 2. Her own attempt to move it to Production fails, and says why.
    message = denied(lambda: client_as(alice).transition_model_version_stage(MODEL, v1, "Production",
                                                                               archive_existing_versions=True))
    assert "only the CI service account may transition to Production" in message
    assert upstream_stage(mlflow_server, MODEL, v1) == "None"

    # 3. An under-trained v2 cannot reach Staging, not even by CI.
    client_as(alice)
    v2 = train_and_register(MODEL, experiment="fraud", val_auc=0.71)
    message = denied(lambda: client_as(ci).transition_model_version_stage(MODEL, v2, "Staging"))
    assert "val_auc 0.71 is below the gate 0.80 for fraud-detector" in message
    assert upstream_stage(mlflow_server, MODEL, v2) == "None"

    # 4. CI moves v1 to Staging (it passes the gate: tags present, val_auc 0.91, source is the run's logged model).
    client_as(ci).transition_model_version_stage(MODEL, v1, "Staging")
    assert upstream_stage(mlflow_server, MODEL, v1) == "Staging"

    # 5. A reviewer approves v1; the author's own approval is refused.
    assert workflow(gate.url, alice, "create", name=MODEL, version=v1, stage="Production").status_code == 200
    own = workflow(gate.url, alice, "approve", name=MODEL, version=v1, stage="Production", archive_existing_versions=True)
    assert own.status_code == 403 and "cannot approve" in own.json()["message"], own.text
    ok = workflow(gate.url, bob, "approve", name=MODEL, version=v1, stage="Production", archive_existing_versions=True)
    assert ok.status_code == 200, ok.text

    # 6. CI moves v1 to Production, archiving what was there; without archiving it is refused.
    message = denied(lambda: client_as(ci).transition_model_version_stage(MODEL, v1, "Production"))
    assert "archive_existing_versions" in message
    client_as(ci).transition_model_version_stage(MODEL, v1, "Production", archive_existing_versions=True)
    assert upstream_stage(mlflow_server, MODEL, v1) == "Production"

    # 7. CI cannot do the same for a version without an approval.
    client_as(alice)
    v3 = train_and_register(MODEL, experiment="fraud", val_auc=0.93)
    client_as(ci).transition_model_version_stage(MODEL, v3, "Staging")
    message = denied(lambda: client_as(ci).transition_model_version_stage(MODEL, v3, "Production",
                                                                          archive_existing_versions=True))
    assert f"version {v3} of fraud-detector has no approval from a reviewer other than its creator" in message
    assert upstream_stage(mlflow_server, MODEL, v3) == "Staging"
    approve_for(gate.url, MODEL, v3, "Production", alice, bob)
    client_as(ci).transition_model_version_stage(MODEL, v3, "Production", archive_existing_versions=True)
    assert upstream_stage(mlflow_server, MODEL, v3) == "Production"
    assert upstream_stage(mlflow_server, MODEL, v1) == "Archived"

    # 8. v3 misbehaves: on-call rolls back to v1, which was in Production before, without a new approval.
    message = denied(lambda: client_as(alice).transition_model_version_stage(MODEL, v1, "Production",
                                                                               archive_existing_versions=True))
    client_as(carol).transition_model_version_stage(MODEL, v1, "Production", archive_existing_versions=True)
    assert upstream_stage(mlflow_server, MODEL, v1) == "Production"
    assert upstream_stage(mlflow_server, MODEL, v3) == "Archived"
    # ...but on-call cannot use break-glass for a version that was never in Production.
    message = denied(lambda: client_as(carol).transition_model_version_stage(MODEL, v2, "Production",
                                                                               archive_existing_versions=True))
    assert upstream_stage(mlflow_server, MODEL, v2) == "None"
    # The rollback is flagged in the gate's log: carol's transition, allowed, with break_glass set.
    flagged = [line for line in gate.log.read_text().splitlines()
               if '"rpc":"TransitionModelVersionStage"' in line and '"sub":"carol"' in line and '"decision":"allow"' in line]
    assert flagged and all('"break_glass":true' in line for line in flagged), flagged
