"""AI-gateway endpoints have owner chains like every other MLflow object, against the real MLflow 3.17.2 (its gateway
enabled by default, secrets encrypted with the development KEK): the admin creates an endpoint for team A (the gate
stamps `created_by`) and grants team A MANAGE on it; team B reads and invokes it by default but cannot change,
re-tag or delete it; a grant widens that; a `NO_PERMISSIONS` grant hides it from every list and stops its
invocations (the gate's 403, where an allowed caller reaches MLflow, which refuses the incomplete request: there is
no real provider here); revoking works at once. Every denial asserts MLflow's state did not change. A second gate, whose policy
data (only) opens endpoint creation to engineers and makes invoking a grant, shows the creator's MANAGE and a USE
grant."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, gate_config, gate_process, run_gate
from helpers import assert_denied, http, unique, upstream

GATEWAY = "/api/3.0/mlflow/gateway"


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def new_definition(gate, root: str) -> str:
    """A secret and a model definition (admin-only), for an endpoint's model config: its id."""
    secret = ok(http(gate.url, "POST", f"{GATEWAY}/secrets/create", root,
                     json={"secret_name": unique("key"), "secret_value": {"api_key": "sk-test"},
                           "provider": "openai"}))["secret"]
    return ok(http(gate.url, "POST", f"{GATEWAY}/model-definitions/create", root,
                   json={"name": unique("def"), "secret_id": secret["secret_id"], "provider": "openai",
                         "model_name": "gpt-4o-mini"}))["model_definition"]["model_definition_id"]


@pytest.fixture(scope="module")
def open_gate(mlflow_server, gate_keys, tmp_path_factory):
    """A second gate on the same MLflow whose policy data lets engineers create endpoints and makes invoking one a
    grant (`type_default.gateway_endpoint` = READ): no Rego changed."""
    policies = tmp_path_factory.mktemp("gw-policies") / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("*_test.rego"))
    data = json.loads((policies / "data.json").read_text())
    data["operations"]["admin_mutations"].remove("CreateGatewayEndpoint")
    data["operations"]["engineer_mutations"].append("CreateGatewayEndpoint")
    data["permissions"]["type_default"]["gateway_endpoint"] = "READ"
    (policies / "data.json").write_text(json.dumps(data))
    config = gate_config(mlflow_server.url, gate_keys.jwks, {"policy": {"dir": str(policies)}})
    with gate_process(tmp_path_factory.mktemp("gw-open-gate"), config) as gate:
        yield gate


@pytest.fixture(scope="module")
def endpoint(gate, two_teams) -> dict:
    """Team A's endpoint (created by the admin, whose claimed `created_by` the gate replaces), with team A's
    group MANAGE grant; its `endpoint_id` and `name`."""
    root = two_teams["root"]
    secret = ok(http(gate.url, "POST", f"{GATEWAY}/secrets/create", root,
                     json={"secret_name": unique("key"), "secret_value": {"api_key": "sk-test"},
                           "provider": "openai", "created_by": "mallory"}))["secret"]
    definition = ok(http(gate.url, "POST", f"{GATEWAY}/model-definitions/create", root,
                         json={"name": unique("def"), "secret_id": secret["secret_id"], "provider": "openai",
                               "model_name": "gpt-4o-mini"}))["model_definition"]
    config = {"model_definition_id": definition["model_definition_id"], "linkage_type": "PRIMARY"}
    created = ok(http(gate.url, "POST", f"{GATEWAY}/endpoints/create", root,
                      json={"name": unique("chat-a"), "created_by": "mallory", "model_configs": [config]}))
    ep = created["endpoint"]
    ok(http(gate.url, "POST", "/api/2.0/mlflow/gateway/endpoints/permissions/create", root,
            json={"endpoint_id": ep["endpoint_id"], "group_name": "team-a", "permission": "MANAGE"}))
    ok(http(gate.url, "POST", f"{GATEWAY}/endpoints/bindings/create", two_teams["ana"],
            json={"endpoint_id": ep["endpoint_id"], "resource_type": "scorer", "resource_id": unique("scorer")}))
    return {"endpoint_id": ep["endpoint_id"], "name": ep["name"], "created_by": ep["created_by"],
            "secret_created_by": secret.get("created_by")}


def grant(gate, token: str, ep: dict, action: str, **fields):
    method = {"create": "POST", "update": "PATCH", "delete": "DELETE", "get": "GET"}[action]
    body = {"endpoint_id": ep["endpoint_id"], **fields}
    path = f"/api/2.0/mlflow/gateway/endpoints/permissions/{action}"
    if method == "GET":
        return http(gate.url, method, path, token, params=body)
    return http(gate.url, method, path, token, json=body)


def direct(mlflow_server, ep: dict) -> dict:
    return upstream(mlflow_server, f"{GATEWAY}/endpoints/get", endpoint_id=ep["endpoint_id"])["endpoint"]


def listed(gate, token: str) -> tuple[set[str], set[str], set[str], str]:
    """The endpoint names the caller sees in MLflow's list and in the OpenAI-style model list, and the endpoint ids
    of the bindings it sees."""
    mlflow_list = http(gate.url, "GET", f"{GATEWAY}/endpoints/list", token)
    models = http(gate.url, "GET", "/gateway/mlflow/v1/models", token)
    bindings = http(gate.url, "GET", f"{GATEWAY}/endpoints/bindings/list", token)
    names = {e.get("name") for e in ok(mlflow_list).get("endpoints", [])}
    model_ids = {m["id"] for m in ok(models).get("data", [])}
    bound = {b["endpoint_id"] for b in ok(bindings).get("bindings", [])}
    return names, model_ids, bound, mlflow_list.text + models.text + bindings.text


def chat(gate, token: str, name: str):
    """An OpenAI-style chat naming the endpoint, without `messages`: MLflow refuses it after the gate's check and
    before any provider call (there is none here; MLflow's 500 for a failed provider call drops its connection)."""
    return http(gate.url, "POST", "/gateway/mlflow/v1/chat/completions", token, json={"model": name})


def invoke_by_path(gate, token: str, name: str):
    return http(gate.url, "POST", f"/gateway/{name}/mlflow/invocations", token, json={})


def reached_mlflow(response) -> None:
    """The gate let the invocation through: MLflow itself refused the incomplete request."""
    assert 400 <= response.status_code < 500 and response.status_code != 403, response.text
    assert "may not" not in response.text, response.text


def test_the_gate_stamps_the_creator_of_gateway_objects(endpoint):
    assert endpoint["created_by"] == "root"
    assert endpoint["secret_created_by"] == "root"


def test_another_team_cannot_change_retag_or_delete_an_endpoint(gate, mlflow_server, endpoint, two_teams):
    ben = two_teams["ben"]
    before = direct(mlflow_server, endpoint)
    update = http(gate.url, "POST", f"{GATEWAY}/endpoints/update", ben,
                  json={"endpoint_id": endpoint["endpoint_id"], "name": unique("stolen")})
    assert_denied(update, "ben may not UpdateGatewayEndpoint", "needs EDIT", "ben has USE")
    tag = http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", ben,
               json={"endpoint_id": endpoint["endpoint_id"], "key": "owner", "value": "ben"})
    assert_denied(tag, "needs EDIT")
    delete = http(gate.url, "DELETE", f"{GATEWAY}/endpoints/delete", ben, json={"endpoint_id": endpoint["endpoint_id"]})
    assert_denied(delete, "ben may not DeleteGatewayEndpoint", "needs MANAGE")
    regrant = grant(gate, ben, endpoint, "create", username="ben", permission="MANAGE")
    assert_denied(regrant, "needs MANAGE")
    assert direct(mlflow_server, endpoint) == before
    # Reading and invoking are open by default (data.permissions.type_default.gateway_endpoint = USE).
    ok(http(gate.url, "GET", f"{GATEWAY}/endpoints/get", ben, params={"endpoint_id": endpoint["endpoint_id"]}))
    reached_mlflow(chat(gate, ben, endpoint["name"]))


def test_the_owning_team_changes_its_endpoint_and_nobody_writes_grant_tags_directly(gate, mlflow_server, endpoint,
                                                                                     two_teams):
    ok(http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", two_teams["alex"],
            json={"endpoint_id": endpoint["endpoint_id"], "key": "team", "value": "a"}))
    forged = http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", two_teams["alex"],
                  json={"endpoint_id": endpoint["endpoint_id"], "key": "mlflow_gate.grant.user.ben",
                        "value": "MANAGE"})
    assert_denied(forged, "reserved")
    tags = {t["key"]: t["value"] for t in direct(mlflow_server, endpoint).get("tags", [])}
    assert tags.get("team") == "a" and "mlflow_gate.grant.user.ben" not in tags


def test_a_grant_lets_another_team_edit_but_not_delete(gate, mlflow_server, endpoint, two_teams):
    ben = two_teams["ben"]
    ok(grant(gate, two_teams["ana"], endpoint, "create", username="ben", permission="EDIT"))
    try:
        assert ok(grant(gate, two_teams["ana"], endpoint, "get", username="ben")) == {
            "gateway_endpoint_permission": {"endpoint_id": endpoint["endpoint_id"], "username": "ben",
                                            "user_id": "ben", "permission": "EDIT"}}
        ok(http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", ben,
                json={"endpoint_id": endpoint["endpoint_id"], "key": "reviewed-by", "value": "ben"}))
        delete = http(gate.url, "DELETE", f"{GATEWAY}/endpoints/delete", ben,
                      json={"endpoint_id": endpoint["endpoint_id"]})
        assert_denied(delete, "needs MANAGE", "ben has EDIT (a grant to ben on the gateway_endpoint")
        assert direct(mlflow_server, endpoint)["endpoint_id"] == endpoint["endpoint_id"]
    finally:
        ok(grant(gate, two_teams["ana"], endpoint, "delete", username="ben"))
    update = http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", ben,
                  json={"endpoint_id": endpoint["endpoint_id"], "key": "reviewed-by", "value": "again"})
    assert_denied(update, "needs EDIT")


def test_no_permissions_hides_an_endpoint_and_stops_its_invocation_until_revoked(gate, mlflow_server, endpoint,
                                                                                  two_teams):
    ben, name = two_teams["ben"], endpoint["name"]
    names, models, bound, _ = listed(gate, ben)
    assert name in names and name in models and endpoint["endpoint_id"] in bound
    ok(grant(gate, two_teams["ana"], endpoint, "create", group_name="team-b", permission="NO_PERMISSIONS"))
    try:
        names, models, bound, text = listed(gate, ben)
        assert name not in names and name not in models and endpoint["endpoint_id"] not in bound
        assert endpoint["endpoint_id"] not in text and name not in text
        assert_denied(http(gate.url, "GET", f"{GATEWAY}/endpoints/get", ben, params={"name": name}),
                      "needs READ", "NO_PERMISSIONS")
        assert_denied(chat(gate, ben, name), "ben may not GatewayChatCompletions", "needs USE", "NO_PERMISSIONS")
        assert_denied(invoke_by_path(gate, ben, name), "ben may not GatewayInvocations", "needs USE")
        # Team A still sees and invokes it.
        names, _, bound, _ = listed(gate, two_teams["alex"])
        assert name in names and endpoint["endpoint_id"] in bound
        reached_mlflow(chat(gate, two_teams["alex"], name))
        reached_mlflow(invoke_by_path(gate, two_teams["alex"], name))
    finally:
        ok(grant(gate, two_teams["ana"], endpoint, "delete", group_name="team-b"))
    assert name in listed(gate, ben)[0]
    reached_mlflow(chat(gate, ben, name))


def test_an_invocation_naming_no_endpoint_is_refused_and_secrets_stay_admin_only(gate, two_teams):
    response = http(gate.url, "POST", "/gateway/mlflow/v1/chat/completions", two_teams["ben"],
                    json={"messages": [{"role": "user", "content": "hi"}]})
    assert_denied(response, "names no endpoint_name or model or name")
    # A body the gate cannot read as JSON (MLflow would decompress a zstd one) cannot name its endpoint: refused.
    compressed = http(gate.url, "POST", "/gateway/mlflow/v1/chat/completions", two_teams["ben"],
                      data=b"\x28\xb5\x2f\xfd\x00\x00", headers={"Content-Encoding": "zstd",
                                                                "Content-Type": "application/json"})
    assert compressed.status_code == 400, compressed.text
    secret = http(gate.url, "POST", f"{GATEWAY}/secrets/create", two_teams["ana"],
                  json={"secret_name": unique("key"), "secret_value": {"api_key": "x"}, "provider": "openai"})
    assert_denied(secret, "only admins may call CreateGatewaySecret")


def test_the_cli_grants_on_an_endpoint_by_name(gate, endpoint, two_teams):
    common = ["--gate-url", gate.url, "--token", two_teams["ana"], "--gateway-endpoint-name", endpoint["name"],
              "--group", "team-b"]
    run_gate("grants", "set", *common, "--level", "EDIT")
    got = json.loads(run_gate("grants", "get", *common))
    assert got == {"gateway_endpoint_permission": {"endpoint_id": endpoint["endpoint_id"], "group_name": "team-b",
                                                   "user_id": "team-b", "permission": "EDIT"}}
    ok(http(gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", two_teams["ben"],
            json={"endpoint_id": endpoint["endpoint_id"], "key": "by-cli", "value": "yes"}))
    run_gate("grants", "revoke", *common)
    assert grant(gate, two_teams["ana"], endpoint, "get", group_name="team-b").status_code == 404


def test_an_engineer_who_creates_an_endpoint_manages_it_and_invoking_can_be_made_a_grant(open_gate, mlflow_server,
                                                                                        two_teams):
    ana, ben = two_teams["ana"], two_teams["ben"]
    config = {"model_definition_id": new_definition(open_gate, two_teams["root"]), "linkage_type": "PRIMARY"}
    ep = ok(http(open_gate.url, "POST", f"{GATEWAY}/endpoints/create", ana,
                 json={"name": unique("chat-ana"), "model_configs": [config]}))["endpoint"]
    assert ep["created_by"] == "ana"
    assert_denied(chat(open_gate, ben, ep["name"]), "needs USE", "ben has READ (the default")
    assert_denied(chat(open_gate, two_teams["alex"], ep["name"]), "needs USE")  # her team mate, no grant
    reached_mlflow(chat(open_gate, ana, ep["name"]))  # the creator's MANAGE
    ok(grant(open_gate, ana, ep, "create", group_name="team-b", permission="USE"))
    reached_mlflow(chat(open_gate, ben, ep["name"]))
    assert_denied(http(open_gate.url, "POST", f"{GATEWAY}/endpoints/set-tag", ben,
                       json={"endpoint_id": ep["endpoint_id"], "key": "k", "value": "v"}), "needs EDIT", "ben has USE")
    assert "k" not in {t["key"] for t in direct(mlflow_server, ep).get("tags", [])}
    ok(http(open_gate.url, "DELETE", f"{GATEWAY}/endpoints/delete", ana, json={"endpoint_id": ep["endpoint_id"]}))


def test_the_owner_deletes_the_endpoint(gate, mlflow_server, endpoint, two_teams):
    ok(http(gate.url, "DELETE", f"{GATEWAY}/endpoints/delete", two_teams["ana"],
            json={"endpoint_id": endpoint["endpoint_id"]}))
    gone = http(mlflow_server.url, "GET", f"{GATEWAY}/endpoints/get", params={"endpoint_id": endpoint["endpoint_id"]})
    assert gone.status_code == 404, gone.text
