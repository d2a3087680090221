"""Browser sign-in against a real OpenID Connect provider (node oidc-provider) and the real MLflow server, driven
with `requests` as a browser would (redirects, the IdP's login form, cookies): the UI and its API calls work with
the session; API calls without it get 401 JSON; a replayed callback, an open redirect and a cross-origin form post
are refused and leave MLflow unchanged; sign-out ends the session and sends the browser to the IdP again."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests

from support.browser import login_form, session, session_cookie, sign_in

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
SEARCH = "/ajax-api/2.0/mlflow/experiments/search?max_results=5"
CREATE = "/ajax-api/2.0/mlflow/experiments/create"


def callback_url(bgate, s: requests.Session, path: str = "/") -> str:
    """Runs a sign-in up to the IdP's redirect to the gate's callback, and returns that URL (not yet visited)."""
    page = s.get(bgate.url + path, headers=HTML, timeout=30)
    form = login_form(page.text)
    form.fields.update({"login": "engineer", "password": "any"})
    resp = s.post(requests.compat.urljoin(page.url, form.action), data=form.fields, allow_redirects=False, timeout=30)
    for _ in range(10):
        location = requests.compat.urljoin(resp.url, resp.headers["Location"])
        if location.startswith(bgate.url + "/gate/callback"):
            return location
        resp = s.get(location, allow_redirects=False, timeout=30)
    pytest.fail("the IdP never redirected to the gate's callback")


def test_engineer_signs_in_and_the_ui_and_its_api_calls_work(bgate):
    s, page = sign_in(bgate, "engineer")
    assert page.status_code == 200 and page.url == bgate.url + "/", page.url
    assert "static-files/static/js/main" in page.text, "the MLflow UI's page"
    assert session_cookie(s), "a session cookie was set"
    api = s.get(bgate.url + SEARCH, timeout=30)
    assert api.status_code == 200, api.text
    assert "experiments" in api.json()
    me = s.get(bgate.url + "/gate/me", timeout=30).json()
    assert me["via"] == "session" and me["groups"] == ["ml-engineers"], me
    assert me["sub"] == f"{bgate.idp.issuer}#engineer", me


def test_api_calls_without_a_session_get_401_json_not_a_redirect(bgate):
    resp = session().get(bgate.url + SEARCH, headers=HTML, allow_redirects=False, timeout=30)
    assert resp.status_code == 401
    assert resp.json()["error_code"] == "UNAUTHENTICATED"


def test_replayed_callback_is_refused(bgate):
    s = session()
    url = callback_url(bgate, s)
    login_cookies = requests.utils.dict_from_cookiejar(s.cookies)  # what an attacker replaying it would hold
    first = s.get(url, allow_redirects=False, timeout=30)
    assert first.status_code == 302 and first.headers["Location"] == "/", first.text
    replay = session()
    replay.cookies.update(login_cookies)
    again = replay.get(url, allow_redirects=False, timeout=30)
    assert again.status_code == 401
    assert "replayed" in again.json()["message"], again.text
    assert session_cookie(replay) is None


def test_open_redirect_after_sign_in_stays_on_the_gate(bgate):
    for target in ["//evil.example/", "https://evil.example/", "/\\evil.example"]:
        s = session()
        url = callback_url(bgate, s, f"/gate/login?return_to={quote(target, safe='')}")
        done = s.get(url, allow_redirects=False, timeout=30)
        assert done.status_code == 302 and done.headers["Location"] == "/", (target, done.headers.get("Location"))


def test_cross_origin_form_post_with_the_session_is_refused_and_mlflow_unchanged(bgate, mlflow_server):
    s, _ = sign_in(bgate, "engineer")
    name = "csrf-victim"
    forged = s.post(bgate.url + CREATE, data={"name": name}, timeout=30,
                    headers={"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 403 and forged.json()["error_code"] == "PERMISSION_DENIED", forged.text
    assert "cross-site" in forged.json()["message"]
    no_origin = s.post(bgate.url + CREATE, json={"name": name}, timeout=30)
    assert no_origin.status_code == 403, no_origin.text
    direct = requests.get(f"{mlflow_server.url}/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": name}, timeout=30)
    assert direct.status_code == 404, "MLflow unchanged"
    same = s.post(bgate.url + CREATE, json={"name": name}, headers={"Origin": bgate.url}, timeout=30)
    assert same.status_code == 200, same.text


def test_sign_out_ends_the_session_and_sends_the_browser_to_the_idp(bgate):
    s, _ = sign_in(bgate, "engineer")
    out = s.get(bgate.url + "/gate/logout", allow_redirects=False, timeout=30)
    assert out.status_code == 302
    assert out.headers["Location"].startswith(bgate.idp.issuer + "/session/end"), out.headers["Location"]
    assert session_cookie(s) is None, "the session cookie was cleared"
    assert s.get(bgate.url + SEARCH, timeout=30).status_code == 401
    again = s.get(bgate.url + "/", headers=HTML, allow_redirects=False, timeout=30)
    assert again.status_code == 302 and again.headers["Location"].startswith(bgate.idp.issuer)
