"""Resource permissions beyond the REST reads of one object, against the real MLflow 3.17.2: GraphQL (the UI's own
queries, and every root field the gate admits), the metric histories that name several runs
(`get-history-bulk-interval`, `get-history-bulk`), the v3 batch reads of traces, evaluation datasets (search and
read by id) and scorers. Team A's experiment and registered model deny team B (`NO_PERMISSIONS` group grants); team
B cannot read A's objects through any of these routes, its searches and lists come back without A's objects, and
the UI's GraphQL queries keep working for whoever may read the experiment. Team A's objects that are not made
through the gate's own routes (traces, a model version of B's run, a scorer) are written straight to MLflow, as a
client that predates the gate would have."""

from __future__ import annotations

import uuid

import pytest

from helpers import assert_denied, http, unique

# The MLflow 3.17.2 UI's queries, as its JS bundle sends them (mlflow/server/js/build/static/js).
UI_GET_RUN = """query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
  mlflowGetRun(input: $data) { apiError { helpUrl code message } run { info { runName status runUuid experimentId
  artifactUri endTime lifecycleStage startTime userId } experiment { experimentId name tags { key value }
  artifactLocation lifecycleStage lastUpdateTime } modelVersions { status version name source } data { metrics { key
  value step timestamp } params { key value } tags { key value } } inputs { datasetInputs { dataset { digest name
  profile schema source sourceType } tags { key value } } modelInputs { modelId } } outputs { modelOutputs { modelId
  step } } } } }"""

UI_SEARCH_RUNS = """query SearchRuns($data: MlflowSearchRunsInput!) { mlflowSearchRuns(input: $data) { apiError {
  helpUrl code message } runs { info { runName status runUuid experimentId artifactUri endTime lifecycleStage
  startTime userId } experiment { experimentId name tags { key value } artifactLocation lifecycleStage
  lastUpdateTime } data { metrics { key value step timestamp } params { key value } tags { key value } } inputs {
  datasetInputs { dataset { digest name profile schema source sourceType } tags { key value } } modelInputs { modelId
  } } outputs { modelOutputs { modelId step } } modelVersions { version name creationTimestamp status source } } } }"""

UI_GET_EXPERIMENT = """query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!)
  @component(name: "MLflow.ExperimentRunTracking") { mlflowGetExperiment(input: $input) { apiError { code message }
  experiment { artifactLocation creationTime effectiveTraceArchivalRetention experimentId lastUpdateTime
  lifecycleStage name tags { key value } } } }"""

UI_BULK_INTERVAL = """query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!)
  @component(name: "MLflow.ExperimentRunTracking") { mlflowGetMetricHistoryBulkInterval(input: $data) { __typename
  metrics { timestamp step runId key value } apiError { code message } } }"""


@pytest.fixture(scope="module")
def people(two_teams) -> dict[str, str]:
    return two_teams


def call(gate, token: str, method: str, path: str, payload: dict) -> dict:
    response = http(gate.url, method, path, token, json=payload)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def direct(mlflow_server, method: str, path: str, payload: dict) -> dict:
    response = http(mlflow_server.url, method, path, json=payload)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def trace_in(mlflow_server, experiment_id: str) -> str:
    trace_id = f"tr-{uuid.uuid4().hex}"
    info = {"trace_id": trace_id, "state": "OK", "request_time": "2026-01-01T00:00:00Z", "execution_duration": "1s",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}}
    direct(mlflow_server, "POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": info}})
    return trace_id


class Side:
    """One team's experiment, run (with a metric), trace and evaluation dataset, made by its engineer."""

    def __init__(self, gate, mlflow_server, token: str, who: str):
        self.experiment = call(gate, token, "POST", "/api/2.0/mlflow/experiments/create",
                               {"name": unique(f"surface-{who}")})["experiment_id"]
        run = call(gate, token, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": self.experiment})["run"]
        self.run, self.artifact_uri = run["info"]["run_id"], run["info"]["artifact_uri"]
        for step in range(3):
            call(gate, token, "POST", "/api/2.0/mlflow/runs/log-metric",
                 {"run_id": self.run, "key": "loss", "value": 1.0 / (step + 1), "timestamp": step, "step": step})
        self.trace = trace_in(mlflow_server, self.experiment)
        self.dataset_name = unique(f"eval-{who}")
        self.dataset = call(gate, token, "POST", "/api/3.0/mlflow/datasets/create",
                            {"name": self.dataset_name, "experiment_ids": [self.experiment]})["dataset"]["dataset_id"]


@pytest.fixture(scope="module")
def sides(gate, mlflow_server, people) -> dict[str, Side]:
    """Team A's and team B's objects; A's experiment and model deny team B. A's model has a version made from B's
    run (so B's run lists a model version of a model B may not read)."""
    a = Side(gate, mlflow_server, people["ana"], "ana")
    b = Side(gate, mlflow_server, people["ben"], "ben")
    call(gate, people["ana"], "POST", "/api/2.0/mlflow/experiments/permissions/create",
         {"experiment_id": a.experiment, "group_name": "team-b", "permission": "NO_PERMISSIONS"})
    a.model = unique("surface-model-a")
    call(gate, people["ana"], "POST", "/api/2.0/mlflow/registered-models/create", {"name": a.model})
    call(gate, people["ana"], "POST", "/api/2.0/mlflow/registered-models/permissions/create",
         {"name": a.model, "group_name": "team-b", "permission": "NO_PERMISSIONS"})
    direct(mlflow_server, "POST", "/api/2.0/mlflow/model-versions/create",
           {"name": a.model, "source": f"{b.artifact_uri}/model", "run_id": b.run})
    return {"a": a, "b": b}


def graphql(gate, token: str, query: str, variables: dict):
    return http(gate.url, "POST", "/graphql", token, json={"query": query, "variables": variables})


# --- GraphQL ------------------------------------------------------------------------------------------------------

def test_graphql_refuses_another_teams_run_experiment_and_searches(gate, sides, people):
    a, b = sides["a"], sides["b"]
    ben = people["ben"]
    assert_denied(graphql(gate, ben, UI_GET_RUN, {"data": {"runId": a.run}}), "ben may not GraphQL the run",
           "NO_PERMISSIONS (a grant to the group team-b on the experiment")
    assert_denied(graphql(gate, ben, UI_GET_EXPERIMENT, {"input": {"experimentId": a.experiment}}),
           "ben may not GraphQL the experiment")
    assert_denied(graphql(gate, ben, UI_SEARCH_RUNS, {"data": {"experimentIds": [b.experiment, a.experiment]}}),
           f"({a.experiment})")
    assert_denied(graphql(gate, ben, UI_BULK_INTERVAL, {"data": {"runIds": [b.run, a.run], "metricKey": "loss"}}),
           f"({a.run})")
    listing = "query L($d: MlflowListArtifactsInput!) { mlflowListArtifacts(input: $d) { files { path } } }"
    assert_denied(graphql(gate, ben, listing, {"d": {"runUuid": a.run}}), "ben may not GraphQL the run")
    datasets = ("mutation D($d: MlflowSearchDatasetsInput!) { mlflowSearchDatasets(input: $d) { datasetSummaries { "
                "experimentId name } } }")
    assert_denied(graphql(gate, ben, datasets, {"d": {"experimentIds": [a.experiment]}}), "ben may not GraphQL")
    # Inline inputs and aliases are read the same way.
    inline = f'{{ x: mlflowGetRun(input: {{runUuid: "{a.run}"}}) {{ run {{ info {{ runName }} }} }} }}'
    assert_denied(graphql(gate, ben, inline, {}), "ben may not GraphQL the run")


def test_graphql_refuses_what_it_cannot_check_and_searches_that_name_no_experiment(gate, sides, people):
    ben = people["ben"]
    assert_denied(graphql(gate, ben, "{ mlflowSearchRuns(input: {}) { runs { info { runUuid } } } }", {}),
           "must name its input.experimentIds")
    assert_denied(graphql(gate, ben, "{ mlflowSearchModelVersions(input: {}) { modelVersions { version source } } }", {}),
           "must select name")
    spread = ("query { mlflowGetRun(input: {runId: \"%s\"}) { run { ...R } } } fragment R on MlflowRun { "
              "modelVersions { source } }" % sides["b"].run)
    assert_denied(graphql(gate, ben, spread, {}), "fragments")
    response = graphql(gate, ben, "{ test(inputString: \"x\" ", {})
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_PARAMETER_VALUE", response.text


def test_graphql_answers_leave_out_versions_the_caller_may_not_read_and_the_ui_works_for_readers(gate, sides, people):
    a, b = sides["a"], sides["b"]
    response = graphql(gate, people["ben"], UI_GET_RUN, {"data": {"runId": b.run}})
    assert response.status_code == 200, response.text
    run = response.json()["data"]["mlflowGetRun"]["run"]
    assert run["info"]["runUuid"] == b.run
    assert run["experiment"]["experimentId"] == b.experiment
    assert run["modelVersions"] == [], run["modelVersions"]
    assert a.model not in response.text
    searched = graphql(gate, people["ben"], UI_SEARCH_RUNS, {"data": {"experimentIds": [b.experiment]}})
    assert searched.status_code == 200, searched.text
    runs = searched.json()["data"]["mlflowSearchRuns"]["runs"]
    assert [r["info"]["runUuid"] for r in runs] == [b.run]
    assert runs[0]["modelVersions"] == [] and a.model not in searched.text
    versions = graphql(gate, people["ben"], "{ v: mlflowSearchModelVersions(input: {filter: \"run_id='%s'\"}) { "
                       "modelVersions { name version } } }" % b.run, {})
    assert versions.status_code == 200 and versions.json()["data"]["v"]["modelVersions"] == [], versions.text
    # The UI's queries keep working for whoever may read: team A (and an admin) see A's version of B's run.
    for who in ("ana", "root"):
        response = graphql(gate, people[who], UI_GET_RUN, {"data": {"runId": sides["b"].run}})
        assert response.status_code == 200, response.text
        versions = response.json()["data"]["mlflowGetRun"]["run"]["modelVersions"]
        assert [v["name"] for v in versions] == [a.model], (who, versions)
    got = graphql(gate, people["ana"], UI_GET_EXPERIMENT, {"input": {"experimentId": a.experiment}})
    assert got.status_code == 200 and got.json()["data"]["mlflowGetExperiment"]["experiment"]["experimentId"] == \
        a.experiment, got.text
    searched = graphql(gate, people["ana"], UI_SEARCH_RUNS, {"data": {"experimentIds": [a.experiment]}})
    assert searched.status_code == 200, searched.text
    assert [r["info"]["runUuid"] for r in searched.json()["data"]["mlflowSearchRuns"]["runs"]] == [a.run]
    bulk = graphql(gate, people["ana"], UI_BULK_INTERVAL, {"data": {"runIds": [a.run], "metricKey": "loss"}})
    assert bulk.status_code == 200, bulk.text
    assert [m["step"] for m in bulk.json()["data"]["mlflowGetMetricHistoryBulkInterval"]["metrics"]] == ["0", "1", "2"]
    typename = graphql(gate, people["ben"], "{ __typename }", {})
    assert typename.status_code == 200 and typename.json()["data"] == {"__typename": "Query"}, typename.text


# --- Metric histories naming several runs ---------------------------------------------------------------------------

def test_metric_histories_of_several_runs_need_every_run(gate, sides, people):
    a, b = sides["a"], sides["b"]
    interval = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
    for path in (interval, "/api/2.0/mlflow/metrics/get-history-bulk-interval"):
        response = http(gate.url, "GET", path, people["ben"], params={"run_ids": [b.run, a.run], "metric_key": "loss"})
        assert_denied(response, "ben may not GetMetricHistoryBulkInterval the run", f"({a.run})")
    own = http(gate.url, "GET", interval, people["ben"], params={"run_ids": [b.run], "metric_key": "loss"})
    assert own.status_code == 200 and len(own.json()["metrics"]) == 3, own.text
    both = http(gate.url, "GET", interval, people["ana"], params={"run_ids": [b.run, a.run], "metric_key": "loss"})
    assert both.status_code == 200 and {m["run_id"] for m in both.json()["metrics"]} == {a.run, b.run}, both.text
    bulk = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
    assert_denied(http(gate.url, "GET", bulk, people["ben"], params={"run_id": [b.run, a.run], "metric_key": "loss"}),
           "ben may not GetMetricHistoryBulk the run")
    both = http(gate.url, "GET", bulk, people["ana"], params={"run_id": [b.run, a.run], "metric_key": "loss"})
    assert both.status_code == 200 and {m["run_id"] for m in both.json()["metrics"]} == {a.run, b.run}, both.text
    none = http(gate.url, "GET", interval, people["ben"], params={"metric_key": "loss"})
    assert_denied(none, "names no run_ids")


# --- Traces, evaluation datasets, scorers ---------------------------------------------------------------------------

def test_batch_reads_of_traces_need_every_trace(gate, sides, people):
    a, b = sides["a"], sides["b"]
    batch = http(gate.url, "GET", "/api/3.0/mlflow/traces/batchGet", people["ben"],
                 params={"trace_ids": [b.trace, a.trace]})
    assert_denied(batch, "ben may not BatchGetTraces the trace", a.trace)
    infos = http(gate.url, "POST", "/api/3.0/mlflow/traces/batchGetInfos", people["ben"],
                 json={"trace_ids": [a.trace]})
    assert_denied(infos, "ben may not BatchGetTraceInfos the trace")
    own = http(gate.url, "POST", "/ajax-api/3.0/mlflow/traces/batchGetInfos", people["ben"],
               json={"trace_ids": [b.trace]})
    assert own.status_code == 200 and [t["trace_id"] for t in own.json()["trace_infos"]] == [b.trace], own.text
    both = http(gate.url, "POST", "/api/3.0/mlflow/traces/batchGetInfos", people["ana"],
                json={"trace_ids": [a.trace, b.trace]})
    assert both.status_code == 200 and len(both.json()["trace_infos"]) == 2, both.text


def test_v3_traces_cannot_be_started_in_another_teams_experiment(gate, mlflow_server, sides, people):
    a, b = sides["a"], sides["b"]

    def start(token: str, experiment: str, camel: bool = False):
        trace_id = f"tr-{uuid.uuid4().hex}"
        location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}
        info = {"trace_id": trace_id, "state": "OK", "request_time": "2026-01-01T00:00:00Z",
                "execution_duration": "1s", "trace_location": location}
        if camel:
            info = {"traceId": trace_id, "state": "OK", "requestTime": "2026-01-01T00:00:00Z",
                    "executionDuration": "1s", "traceLocation": {"type": "MLFLOW_EXPERIMENT",
                                                                 "mlflowExperiment": {"experimentId": experiment}}}
        key = "traceInfo" if camel else "trace_info"
        return trace_id, http(gate.url, "POST", "/api/3.0/mlflow/traces", token, json={"trace": {key: info}})

    for camel in (False, True):
        trace_id, response = start(people["ben"], a.experiment, camel)
        assert_denied(response, "ben may not StartTraceV3 the experiment", "that needs EDIT")
        assert http(mlflow_server.url, "GET", f"/api/3.0/mlflow/traces/{trace_id}").status_code == 404
    trace_id, response = start(people["ben"], b.experiment)
    assert response.status_code == 200, response.text


def test_another_teams_traces_cannot_be_linked_to_ones_run(gate, mlflow_server, sides, people):
    a, b = sides["a"], sides["b"]
    before = http(mlflow_server.url, "GET", f"/api/3.0/mlflow/traces/{a.trace}").json()
    assert_denied(http(gate.url, "POST", "/api/2.0/mlflow/traces/link-to-run", people["ben"],
                json={"trace_ids": [b.trace, a.trace], "run_id": b.run}),
           "ben may not LinkTracesToRun the trace", "that needs EDIT")
    assert http(mlflow_server.url, "GET", f"/api/3.0/mlflow/traces/{a.trace}").json() == before
    own = http(gate.url, "POST", "/api/2.0/mlflow/traces/link-to-run", people["ben"],
               json={"trace_ids": [b.trace], "run_id": b.run})
    assert own.status_code == 200, own.text


def test_dataset_searches_show_only_readable_datasets_and_reads_by_id_are_checked(gate, sides, people):
    a, b = sides["a"], sides["b"]

    def names(token: str, payload: dict) -> set[str]:
        response = http(gate.url, "POST", "/api/3.0/mlflow/datasets/search", token, json=payload)
        assert response.status_code == 200, response.text
        return {d["name"] for d in response.json().get("datasets", [])}

    mine = {a.dataset_name, b.dataset_name}
    assert names(people["ben"], {"max_results": 1000}) & mine == {b.dataset_name}
    assert names(people["ben"], {"experiment_ids": [a.experiment, b.experiment]}) == {b.dataset_name}
    assert names(people["ana"], {"experiment_ids": [a.experiment, b.experiment]}) == mine
    for path in (f"/api/3.0/mlflow/datasets/{a.dataset}", f"/api/3.0/mlflow/datasets/{a.dataset}/records",
                 f"/ajax-api/3.0/mlflow/datasets/{a.dataset}/experiment-ids"):
        assert_denied(http(gate.url, "GET", path, people["ben"]), "ben may not", f"the dataset \"{a.dataset_name}\"")
    own = http(gate.url, "GET", f"/api/3.0/mlflow/datasets/{b.dataset}", people["ben"])
    assert own.status_code == 200 and own.json()["dataset"]["name"] == b.dataset_name, own.text
    before = http(gate.url, "GET", f"/api/3.0/mlflow/datasets/{a.dataset}", people["ana"]).json()
    assert_denied(http(gate.url, "DELETE", f"/api/3.0/mlflow/datasets/{a.dataset}", people["ben"]), "that needs MANAGE")
    assert_denied(http(gate.url, "PATCH", f"/api/3.0/mlflow/datasets/{a.dataset}/tags", people["ben"],
                json={"tags": "{\"k\": \"v\"}"}), "that needs EDIT")
    after = http(gate.url, "GET", f"/api/3.0/mlflow/datasets/{a.dataset}", people["ana"]).json()
    assert after == before


def test_datasets_cannot_be_linked_into_another_teams_experiment(gate, mlflow_server, sides, people):
    a, b = sides["a"], sides["b"]
    sneaky = unique("sneaky")
    assert_denied(http(gate.url, "POST", "/api/3.0/mlflow/datasets/create", people["ben"],
                json={"name": sneaky, "experiment_ids": [b.experiment, a.experiment]}),
           "ben may not CreateDataset the experiment", "that needs EDIT")
    found = http(mlflow_server.url, "POST", "/api/3.0/mlflow/datasets/search", json={"filter_string": f"name = '{sneaky}'"})
    assert found.status_code == 200 and found.json().get("datasets", []) == [], found.text
    assert_denied(http(gate.url, "POST", f"/api/3.0/mlflow/datasets/{b.dataset}/add-experiments", people["ben"],
                json={"experiment_ids": [a.experiment]}), "ben may not AddDatasetToExperiments the experiment")
    linked = http(mlflow_server.url, "GET", f"/api/3.0/mlflow/datasets/{b.dataset}/experiment-ids")
    assert linked.json()["experiment_ids"] == [b.experiment], linked.text
    free = http(gate.url, "POST", "/api/3.0/mlflow/datasets/create", people["ben"], json={"name": unique("free")})
    assert free.status_code == 200, free.text
    own = http(gate.url, "POST", f"/api/3.0/mlflow/datasets/{free.json()['dataset']['dataset_id']}/add-experiments",
               people["ben"], json={"experiment_ids": [b.experiment]})
    assert own.status_code == 200, own.text


@pytest.fixture(scope="module")
def scorer_in_a(mlflow_server, sides) -> str:
    """A built-in scorer registered in team A's experiment, straight in MLflow (its Python API)."""
    import mlflow
    from mlflow.genai.scorers import Safety

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        name = unique("scorer")
        Safety().register(name=name, experiment_id=sides["a"].experiment)
    finally:
        mlflow.set_tracking_uri(previous)
    return name


def test_scorer_lists_and_reads_of_another_teams_experiment_are_refused_or_empty(gate, sides, people, scorer_in_a):
    a = sides["a"]

    def listed(token: str, params: dict) -> list[str]:
        response = http(gate.url, "GET", "/api/3.0/mlflow/scorers/list", token, params=params)
        assert response.status_code == 200, response.text
        return [s["scorer_name"] for s in response.json().get("scorers", [])]

    assert listed(people["ana"], {"experiment_id": a.experiment}) == [scorer_in_a]
    assert listed(people["ben"], {"experiment_id": a.experiment}) == []
    assert scorer_in_a not in listed(people["ben"], {})
    for path in ("/api/3.0/mlflow/scorers/get", "/api/3.0/mlflow/scorers/versions"):
        assert_denied(http(gate.url, "GET", path, people["ben"], params={"experiment_id": a.experiment, "name": scorer_in_a}),
               "ben may not", "the experiment")
    own = http(gate.url, "GET", "/api/3.0/mlflow/scorers/get", people["ana"],
               params={"experiment_id": a.experiment, "name": scorer_in_a})
    assert own.status_code == 200, own.text
    assert_denied(http(gate.url, "DELETE", "/api/3.0/mlflow/scorers/delete", people["ben"],
                json={"experiment_id": a.experiment, "name": scorer_in_a}), "that needs MANAGE")
    assert listed(people["ana"], {"experiment_id": a.experiment}) == [scorer_in_a]
