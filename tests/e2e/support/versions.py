"""What differs between the MLflow clients and servers of the compatibility matrix (2.10.2, 2.22.5, 3.17.2), so
that one suite (test_mlflow_versions.py) runs unchanged with each version's own client: how a model is logged, what
source a registered version gets, and which version the server behind the gate is."""

from __future__ import annotations

import mlflow
import numpy as np

from helpers import GOOD_TAGS, http, unique

CLIENT_VERSION = mlflow.__version__
CLIENT_MAJOR = int(CLIENT_VERSION.split(".")[0])

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.1, 0.8], [0.8, 0.3]])
Y = np.array([0, 1, 0, 1, 0, 1])


def server_version(mlflow_server) -> str:
    """The version the MLflow server reports (`GET /version`, public in every version)."""
    response = http(mlflow_server.url, "GET", "/version")
    assert response.status_code == 200, response.text
    return response.text.strip()


def server_major(mlflow_server) -> int:
    return int(server_version(mlflow_server).split(".")[0])


def log_sklearn_model(model, registered_model_name: str | None = None):
    """`mlflow.sklearn.log_model` in the active run, spelled for this client: MLflow 3 names the model (`name=`, a
    logged model `m-<id>`), MLflow 2 gives a run-relative `artifact_path=` (the files land in the run's directory).
    The pinned requirement skips the slow requirement inference."""
    import mlflow.sklearn
    import sklearn

    where = {"name": "model"} if CLIENT_MAJOR >= 3 else {"artifact_path": "model"}
    return mlflow.sklearn.log_model(model, registered_model_name=registered_model_name,
                                    pip_requirements=[f"scikit-learn=={sklearn.__version__}"], **where)


def train_and_register(name: str, val_auc: float = 0.91, experiment: str | None = None) -> tuple[str, str, object]:
    """Trains a tiny model in a run tagged as the gate requires, logs `val_auc` and registers it as `name` through
    `log_model(..., registered_model_name=...)`. Returns (version, run id, the model)."""
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(experiment or unique("exp"))
    model = LogisticRegression().fit(X, Y)
    with mlflow.start_run(tags=GOOD_TAGS) as run:
        mlflow.log_metric("val_auc", val_auc)
        info = log_sklearn_model(model, registered_model_name=name)
    return registered_version(info, name, run.info.run_id), run.info.run_id, model


def registered_version(info, name: str, run_id: str) -> str:
    """The version `log_model(registered_model_name=name)` registered: on its `ModelInfo` since MLflow 2.11, found by
    the run before (one version of `name` per run here)."""
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        return str(version)
    found = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    assert len(found) == 1, found
    return str(found[0].version)


def expected_source_prefix(experiment_id: str, run_id: str) -> str:
    """The source `log_model(registered_model_name=...)` gives a version: a logged model with MLflow 3's client, the
    run's own directory in the proxied store (`mlflow-artifacts:/<exp>/<run>/artifacts/model`) with MLflow 2's."""
    if CLIENT_MAJOR >= 3:
        return "models:/m-"
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"
