"""The MLflow web UI in a real browser (Debian's chromium, driven through chromium-driver with Selenium) through the
gate with `[browser]` sign-in at the real test IdP, in front of the real MLflow server: an engineer signs in, sees
experiments, runs and registered models (the panels that failed before sign-in existed), opens a model version,
tries an alias move and a stage transition the policy forbids and reads the policy's reasons in the UI, then signs
out and is sent to the IdP again; on the review page the requester's own approval is refused with the reason shown
and a reviewer approves. Screenshots of every step go to test-artifacts/browser/ (see support/browser.py).

Slow (a browser and three servers): one module, one browser, module-scoped servers, every wait bounded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from support.browser import ARTIFACTS, register_and_request, shot_path
from support.browser import sign_in as sign_in_with_requests

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
WAIT_SECS = 60
MODEL, EXPERIMENT, RUN = "browser-ui-model", "browser-ui-experiment", "browser-ui-run"


@pytest.fixture(scope="module")
def seeded(mlflow_server) -> dict:
    """An experiment with a run and a registered model version from it, written to MLflow directly."""
    client = MlflowClient(mlflow_server.url)
    existing = client.get_experiment_by_name(EXPERIMENT)
    # A classic (model training) experiment: its page opens on the runs table.
    kind = {"mlflow.experimentKind": "custom_model_development"}
    exp = existing.experiment_id if existing else client.create_experiment(EXPERIMENT, tags=kind)
    run = client.create_run(exp, run_name=RUN)
    client.log_metric(run.info.run_id, "val_auc", 0.93)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return {"experiment_id": exp, "version": mv.version, "run_id": run.info.run_id}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed (scripts/test.sh installs them with apt-get)")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(Path(profile) / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_SECS)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, what: str):
    try:
        return WebDriverWait(driver, WAIT_SECS, poll_frequency=0.1).until(condition)
    except Exception:
        driver.save_screenshot(str(shot_path(f"failed-{what}")))
        raise


def text_appears(driver, text: str):
    wait(driver, ec.presence_of_element_located((By.XPATH, f"//*[contains(normalize-space(text()), '{text}')]")),
         text)


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(shot_path(name)))


def sign_in(driver, bgate, user: str) -> None:
    driver.get(bgate.url + "/")
    wait(driver, ec.presence_of_element_located((By.NAME, "login")), "idp-login-form")
    assert driver.current_url.startswith(bgate.idp.issuer), driver.current_url
    shot(driver, f"01-idp-login-{user}")
    driver.find_element(By.NAME, "login").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys("any")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait(driver, lambda d: d.current_url.startswith(bgate.url + "/"), "back-at-the-gate")


def test_engineer_uses_the_ui_and_reads_the_policy_reasons_of_a_forbidden_alias_move_and_transition(browser, bgate, seeded,
                                                                                     mlflow_server):
    sign_in(browser, bgate, "engineer")
    browser.get(f"{bgate.url}/#/experiments")
    text_appears(browser, EXPERIMENT)
    shot(browser, "02-experiments")
    # MLflow 3 opens in its GenAI view; runs are in the "Model training" view.
    training = "//*[normalize-space(text())='Model training']"
    wait(browser, ec.element_to_be_clickable((By.XPATH, training)), "model-training-view").click()
    browser.get(f"{bgate.url}/#/experiments/{seeded['experiment_id']}")
    text_appears(browser, RUN)
    shot(browser, "03-runs")
    browser.get(f"{bgate.url}/#/experiments/{seeded['experiment_id']}/runs/{seeded['run_id']}")
    text_appears(browser, "val_auc")
    shot(browser, "03b-run")
    browser.get(f"{bgate.url}/#/models")
    text_appears(browser, MODEL)
    shot(browser, "04-registered-models")
    browser.get(f"{bgate.url}/#/models/{MODEL}/versions/{seeded['version']}")
    text_appears(browser, f"Version {seeded['version']}")
    shot(browser, "05-model-version")
    # A forbidden alias move: the protected alias on a version in stage None. The UI shows the reason in its dialog.
    wait(browser, ec.element_to_be_clickable((By.XPATH, "//button[normalize-space(.)='Add']")), "add-alias").click()
    alias_input = "//*[@role='dialog']//input[@role='combobox']"
    wait(browser, ec.presence_of_element_located((By.XPATH, alias_input)), "alias-input").send_keys("champion\n")
    save = "//*[@role='dialog']//button[normalize-space(.)='Save aliases']"
    wait(browser, ec.element_to_be_clickable((By.XPATH, save)), "save-aliases").click()
    alias_reason = "only the CI service account may move the alias champion"
    text_appears(browser, alias_reason)
    shot(browser, "05b-forbidden-alias-move")
    browser.find_element(By.XPATH, "//*[@role='dialog']//button[normalize-space(.)='Cancel']").click()
    assert MlflowClient(mlflow_server.url).get_model_version(MODEL, seeded["version"]).aliases == []
    # MLflow 3's "new model registry UI" hides stages: switch to the classic view, which has the stage menu.
    wait(browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "[role=switch]")), "registry-ui-switch").click()
    disable = "//*[@role='dialog']//button[normalize-space(.)='Disable']"
    wait(browser, ec.element_to_be_clickable((By.XPATH, disable)), "disable-dialog").click()
    wait(browser, ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='None']")), "stage-menu").click()
    production = "//*[@role='menuitem'][contains(normalize-space(.), 'Production')]"
    wait(browser, ec.element_to_be_clickable((By.XPATH, production)), "production-item").click()
    ok = "//*[@role='dialog']//button[normalize-space(.)='OK']"
    wait(browser, ec.element_to_be_clickable((By.XPATH, ok)), "transition-dialog").click()
    reason = "only the CI service account may transition to Production"
    text_appears(browser, reason)
    shot(browser, "06-forbidden-transition-toast")
    toast = browser.find_element(By.XPATH, f"//*[contains(normalize-space(text()), '{reason}')]").text
    assert toast.startswith("PERMISSION_DENIED: mlflow-gate:"), toast
    assert MlflowClient(mlflow_server.url).get_model_version(MODEL, seeded["version"]).current_stage == "None"


def sign_out(driver, bgate) -> None:
    driver.get(f"{bgate.url}/gate/logout")
    yes = "//button[@name='logout' and @value='yes']"
    wait(driver, ec.element_to_be_clickable((By.XPATH, yes)), "idp-sign-out-confirmation").click()
    wait(driver, ec.presence_of_element_located((By.NAME, "login")), "idp-login-again")


def test_sign_out_sends_the_browser_to_the_idp_again(browser, bgate, seeded):
    browser.get(f"{bgate.url}/gate/me")
    assert '"via":"session"' in browser.page_source, browser.page_source[:300]
    browser.get(f"{bgate.url}/gate/logout")
    wait(browser, lambda d: d.current_url.startswith(bgate.idp.issuer), "at-the-idp-end-session")
    shot(browser, "07-signed-out-at-the-idp")
    # The IdP asks whether to end its own session too; yes: it then returns to the gate, which sends the browser
    # (without a session now) to the IdP's login form.
    yes = "//button[@name='logout' and @value='yes']"
    wait(browser, ec.element_to_be_clickable((By.XPATH, yes)), "idp-sign-out-confirmation").click()
    wait(browser, ec.presence_of_element_located((By.NAME, "login")), "idp-login-again")
    assert browser.current_url.startswith(bgate.idp.issuer)
    shot(browser, "08-sign-in-again")


def approve_on_the_review_page(driver, bgate, name: str):
    """Opens /gate/reviews, clicks Approve on the card of `name`; returns the card's result element."""
    driver.get(f"{bgate.url}/gate/reviews")
    card = f"//section[@class='card'][@data-name='{name}']"
    wait(driver, ec.presence_of_element_located((By.XPATH, card)), "review-card")
    driver.find_element(By.XPATH, f"{card}//button[@data-action='approve']").click()
    result = f"{card}//span[contains(@class, 'result')]"
    wait(driver, lambda d: d.find_element(By.XPATH, result).text not in ("", "..."), "approve-result")
    return driver.find_element(By.XPATH, result)


def test_requester_cannot_approve_on_the_review_page_and_a_reviewer_can(browser, bgate, mlflow_server):
    engineer, _ = sign_in_with_requests(bgate, "engineer")
    name = "browser-review-model"
    ids = register_and_request(bgate, engineer, name, comment="ready for staging")
    sign_in(browser, bgate, "engineer")
    refused = approve_on_the_review_page(browser, bgate, name)
    shot(browser, "09-review-page-own-request-refused")
    assert refused.text.startswith("PERMISSION_DENIED:"), refused.text
    assert f"you created version {ids['version']} of {name}, so you cannot approve it" in refused.text
    verdict = browser.find_element(By.XPATH, f"//section[@data-name='{name}']//p[contains(@class, 'verdict')]").text
    assert "you cannot approve it" in verdict, verdict
    sign_out(browser, bgate)
    sign_in(browser, bgate, "reviewer")
    done = approve_on_the_review_page(browser, bgate, name)
    shot(browser, "10-review-page-approved-by-reviewer")
    assert done.text == "Done: approve", done.text
    wait(browser, lambda d: not d.find_elements(By.XPATH, f"//section[@data-name='{name}']"), "request-left-the-list")
    shot(browser, "11-review-page-after-approval")
    tags = MlflowClient(mlflow_server.url).get_model_version(name, ids["version"]).tags
    assert any(k.startswith("mlflow_gate.activity.") and "APPROVED_REQUEST" in v for k, v in tags.items())
