use super::*;

fn body(query: &str, variables: Value) -> Map<String, Value> {
    json!({"query": query, "variables": variables}).as_object().cloned().unwrap_or_default()
}

fn checked(query: &str, variables: Value) -> Result<Value, Refusal> {
    objects(Some(&body(query, variables))).map(Value::Object)
}

/// The UI's own queries (MLflow 3.17.2's JS bundle), as it sends them.
const UI_GET_RUN: &str = r#"query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
  mlflowGetRun(input: $data) { apiError { helpUrl code message } run { info { runName status runUuid experimentId }
    experiment { experimentId name tags { key value } } modelVersions { status version name source }
    data { metrics { key value step timestamp } params { key value } tags { key value } } } } }"#;

const UI_SEARCH_RUNS: &str = r#"query SearchRuns($data: MlflowSearchRunsInput!) {
  mlflowSearchRuns(input: $data) { apiError { helpUrl code message } runs { info { runName status runUuid experimentId }
    experiment { experimentId name } data { metrics { key value } } modelVersions { version name status source } } } }"#;

#[test]
fn the_uis_get_run_names_the_run_its_experiment_and_the_versions_list() {
    let t = checked(UI_GET_RUN, json!({"data": {"runId": "r1"}}));
    assert_eq!(
        t,
        Ok(json!({"objects": [{"type": "run", "id": "r1"}, {"type": "run_experiment", "id": "r1"}],
            "lists": [{"path": ["mlflowGetRun", "run", "modelVersions"], "type": "model_version", "id": ["name"]}]}))
    );
}

#[test]
fn searches_name_every_experiment_and_the_runs_to_cut() {
    let t = checked(UI_SEARCH_RUNS, json!({"data": {"experimentIds": ["1", "2"], "maxResults": 100}}));
    assert_eq!(
        t,
        Ok(json!({"objects": [{"type": "experiment", "id": "1"}, {"type": "experiment", "id": "2"}],
            "lists": [{"path": ["mlflowSearchRuns", "runs"], "type": "run", "id": ["info", "runUuid"]},
                {"path": ["mlflowSearchRuns", "runs", "modelVersions"], "type": "model_version", "id": ["name"]}]}))
    );
    let no_experiments = checked(UI_SEARCH_RUNS, json!({"data": {}}));
    assert!(matches!(no_experiments, Err(Refusal::Unchecked(m)) if m.contains("experimentIds")));
}

#[test]
fn aliases_inline_inputs_and_defaults_are_followed() {
    let q = r#"query Q($ids: [String] = ["7"]) { a: mlflowGetMetricHistoryBulkInterval(input: {runIds: ["r1", "r2"], metricKey: "m"}) { metrics { runId } }
        b: mlflowSearchDatasets(input: {experimentIds: $ids}) { datasetSummaries { name } }
        mv: mlflowSearchModelVersions(input: {filter: "name='x'"}) { list: modelVersions { n: name version } } }"#;
    assert_eq!(
        checked(q, Value::Null),
        Ok(
            json!({"objects": [{"type": "run", "id": "r1"}, {"type": "run", "id": "r2"}, {"type": "experiment", "id": "7"}],
            "lists": [{"path": ["mv", "list"], "type": "model_version", "id": ["n"]}]})
        )
    );
}

#[test]
fn unknown_roots_fragments_and_unnamed_ids_are_refused() {
    let refused = |q: &str, v: Value| match checked(q, v) {
        Err(Refusal::Unchecked(m)) => m,
        other => panic!("{q}: {other:?}"),
    };
    assert!(refused("{ mlflowDeleteEverything { ok } }", Value::Null).contains("mlflowDeleteEverything"));
    let spread =
        "query { mlflowGetRun(input: {runId: \"r\"}) { run { ...F } } } fragment F on MlflowRun { info { runId } }";
    assert!(refused(spread, Value::Null).contains("fragments"));
    assert!(refused("{ ... on Query { test { output } } }", Value::Null).contains("fragments"));
    let no_name = "{ mlflowSearchModelVersions(input: {}) { modelVersions { version source } } }";
    assert!(refused(no_name, Value::Null).contains("select name"));
    let no_id = "{ mlflowSearchRuns(input: {experimentIds: [\"1\"]}) { runs { data { tags { key } } } } }";
    assert!(refused(no_id, Value::Null).contains("runUuid"));
    assert!(matches!(
        checked("{ mlflowGetRun(input: {}) { run { info { runId } } } }", Value::Null),
        Err(Refusal::Invalid(_))
    ));
    let two = "{ mlflowGetRun(input: {runId: \"a\", runUuid: \"b\"}) { run { info { runId } } } }";
    assert!(matches!(checked(two, Value::Null), Err(Refusal::Invalid(_))));
    assert!(matches!(checked("{ test(inputString: \"x\" ", Value::Null), Err(Refusal::Invalid(_))));
}

#[test]
fn objectless_queries_pass_and_strings_are_decoded() {
    assert_eq!(
        checked("{ __typename test(inputString: \"a\\\"}\") { output } }", Value::Null).map(|t| t["objects"].clone()),
        Ok(json!([]))
    );
    let t = checked(r#"{ mlflowGetExperiment(input: {experimentId: "\u0031"}) { experiment { name } } }"#, Value::Null);
    assert_eq!(t.map(|t| t["objects"].clone()), Ok(json!([{"type": "experiment", "id": "1"}])));
}

#[test]
fn deeply_nested_argument_values_are_refused() {
    let q = format!("{{ test(inputString: {}\"x\"{}) {{ output }} }}", "[".repeat(40), "]".repeat(40));
    assert!(matches!(checked(&q, Value::Null), Err(Refusal::Invalid(m)) if m.contains("nests")));
}
