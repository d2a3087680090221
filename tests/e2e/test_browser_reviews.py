"""The review page (`/gate/reviews`) with people signed in at the real IdP, in front of the real MLflow server: an
engineer registers a version through the gate (so the gate stamps its creator) and asks for Staging; the page shows
the request with its evidence and the policy's answer for whoever looks; the requester's own approval is refused
with the reason the page shows; a reviewer approves through the same API the page's button calls; everything taken
from MLflow (a `<script>` in a tag and in a comment) is rendered as text."""

from __future__ import annotations

import html
import re

import pytest
import requests

from support.browser import post, register_and_request, sign_in

SCRIPT_TAG = "<script>alert('tag')</script>"
SCRIPT_COMMENT = "<script>alert('comment')</script>"


@pytest.fixture(scope="module")
def requested(bgate) -> dict:
    """A version registered by the engineer through the gate, with a planted script in a tag, and the engineer's
    open request to move it to Staging (with a planted script in the comment)."""
    eng, _ = sign_in(bgate, "engineer")
    return {"engineer": eng, **register_and_request(bgate, eng, "reviews-model", SCRIPT_TAG, SCRIPT_COMMENT)}


def card_of(page: str, name: str) -> str:
    match = re.search(rf'<section class="card" data-name="{re.escape(name)}".*?</section>', page, re.S)
    assert match, f"no card for {name} on the page"
    return match.group(0)


def test_review_page_needs_sign_in_and_api_callers_get_401(bgate):
    page = requests.get(bgate.url + "/gate/reviews", headers={"Accept": "text/html"}, allow_redirects=False,
                        timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith(bgate.idp.issuer)
    api = requests.get(bgate.url + "/gate/reviews", headers={"Accept": "application/json"}, timeout=30)
    assert api.status_code == 401 and api.json()["error_code"] == "UNAUTHENTICATED"


def test_requester_sees_the_evidence_and_why_the_policy_refuses_their_own_approval(bgate, requested):
    eng = requested["engineer"]
    page = eng.get(bgate.url + "/gate/reviews", timeout=60)
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    card = card_of(page.text, requested["name"])
    assert "requested to_stage</th><td>Staging" in card
    engineer = f"{bgate.idp.issuer}#engineer"
    assert f'class="requester">{html.escape(engineer)}' in card
    assert f"stamped creator</th><td>{html.escape(engineer)}" in card
    assert f'/#/experiments/{requested["experiment_id"]}/runs/{requested["run_id"]}' in card
    assert re.search(r'tag data_version</td><td>2026-11</td><td class="pass">', card), card
    assert re.search(r'tag git_commit</td><td>0f1e2d3c</td><td class="pass">', card), card
    refusal = re.search(r'<p class="verdict fail">You cannot approve: (.*?)</p>', card)
    assert refusal, card
    shown = html.unescape(refusal.group(1))
    assert f"you created version {requested['version']} of {requested['name']}, so you cannot approve it" in shown
    # The API refuses the same approval with the same reasons.
    own = post(bgate, eng, "transition-requests/approve",
               {"name": requested["name"], "version": requested["version"], "stage": "Staging",
                "archive_existing_versions": True})
    assert own.status_code == 403 and own.json()["error_code"] == "PERMISSION_DENIED"
    assert shown in own.json()["message"], (shown, own.json()["message"])


def test_values_from_mlflow_are_rendered_as_text(bgate, requested):
    page = requested["engineer"].get(bgate.url + "/gate/reviews", timeout=60).text
    card = card_of(page, requested["name"])
    for planted in (SCRIPT_TAG, SCRIPT_COMMENT):
        assert planted not in page, "a planted script reached the page unescaped"
        assert planted in html.unescape(card), f"{planted} is shown as text"
    assert page.count("<script>") == 1, "only the page's own script"


def test_reviewer_approves_through_the_same_api_and_the_request_leaves_the_list(bgate, requested):
    reviewer, _ = sign_in(bgate, "reviewer")
    card = card_of(reviewer.get(bgate.url + "/gate/reviews", timeout=60).text, requested["name"])
    assert '<p class="verdict pass">The policy would let you approve this request.</p>' in card
    approved = post(bgate, reviewer, "transition-requests/approve",
                    {"name": requested["name"], "version": requested["version"], "stage": "Staging",
                     "archive_existing_versions": True, "comment": "evidence checked"})
    assert approved.status_code == 200, approved.text
    after = reviewer.get(bgate.url + "/gate/reviews", timeout=60).text
    assert f'data-name="{requested["name"]}"' not in after
    version_page = reviewer.get(bgate.url + "/gate/reviews/version",
                                params={"name": requested["name"], "version": requested["version"]}, timeout=60)
    assert version_page.status_code == 200, version_page.text
    assert f"{html.escape(bgate.idp.issuer)}#reviewer approved Staging" in version_page.text


def test_version_page_shows_the_stage_history_stamped_by_the_gate(bgate, requested):
    ci, _ = sign_in(bgate, "ci")
    moved = post(bgate, ci, "model-versions/transition-stage",
                 {"name": requested["name"], "version": requested["version"], "stage": "Staging",
                  "archive_existing_versions": False})
    assert moved.status_code == 200, moved.text
    page = ci.get(bgate.url + "/gate/reviews/version",
                  params={"name": requested["name"], "version": requested["version"]}, timeout=60).text
    history = re.search(r'<table class="history">(.*?)</table>', page, re.S)
    assert history, page
    assert "<td>stage: Staging</td>" in history.group(1), history.group(1)
    assert f"<td>by: {html.escape(bgate.idp.issuer)}#ci</td>" in history.group(1), history.group(1)
