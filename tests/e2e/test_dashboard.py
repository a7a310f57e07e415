"""The dashboard end to end: a real worker, headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), launched
through ``executable_path``: ``playwright install`` would need the internet. Without
it the test is skipped locally, and fails where ``STEPSTREAM_E2E_REQUIRED=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import ROOT, WorkerFactory
from tests.integration.helpers import wait_for, wait_for_run
from tests.integration.history_functions import fixed_key

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 30_000


def chromium() -> str:
    """Debian's chromium, or skip (fail in CI: STEPSTREAM_E2E_REQUIRED=1)."""
    found = os.environ.get("STEPSTREAM_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        found, why = None, "the playwright package is not installed (pip install -e '.[dev]')"
    else:
        why = "no chromium found (apt-get install chromium, or set STEPSTREAM_CHROMIUM)"
    if found is None:
        if os.environ.get("STEPSTREAM_E2E_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"


def test_the_dashboard_shows_runs_and_replays_and_cancels_them(
        settings: Settings, start_worker: WorkerFactory, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    worker = start_worker("tests.integration.history_functions")
    client = Stepstream("t", settings=settings)
    narrated = run_id_for("narrated", client.send("test/narrated", {}))
    failed = run_id_for("fixable", client.send("test/fixable", {"order": 42}))
    napping = run_id_for("napper", client.send("test/napper", {"seconds": 120}))
    wait_for_run(worker.url, narrated)
    assert wait_for_run(worker.url, failed)["status"] == "failed"

    # The runs list, with a status filter.
    page.goto(worker.url + "/")
    for run_id in (narrated, failed, napping):
        expect(page.locator(f'#runs-table tr[data-run-id="{run_id}"]')).to_be_visible()
    page.screenshot(path=str(tmp_path / "dashboard-runs.png"), full_page=True)
    page.select_option("#filters select[name=status]", "failed")
    expect(page.locator("#runs-table tbody tr[data-run-id]")).to_have_count(1)
    expect(page.locator(f'#runs-table tr[data-run-id="{failed}"]')).to_contain_text(
        "ConnectionError")

    # The failed run: its timeline has a bar per attempt, its error and logs are there.
    page.click(f'#runs-table tr[data-run-id="{failed}"]')
    expect(page.locator("#run-status")).to_have_attribute("data-status", "failed")
    expect(page.locator(".tl-row")).to_have_count(2)
    expect(page.locator('.bar[data-step="fragile"]')).to_have_count(2)
    expect(page.locator('.bar[data-step="prepare"]')).to_have_count(1)
    expect(page.locator("#logs")).to_contain_text("fragile attempt 2")
    expect(page.locator("main")).to_contain_text("the warehouse API is down")
    page.click('.tl-row[data-step="fragile"]')
    expect(page.locator("#step-detail")).to_contain_text("Traceback")
    expect(page.locator("#cancel-btn")).to_be_disabled()

    # Replay, once the cause is fixed: the page follows the run to completed.
    redis.Redis.from_url(settings.redis_url).set(fixed_key(settings.namespace, failed), 1)
    page.click("#replay-btn")
    expect(page.locator("#notice")).to_contain_text("Replay requested")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
    expect(page.locator('.bar[data-step="fragile"]')).to_have_count(3)
    expect(page.locator("#run-output")).to_contain_text('"shipped": 6')
    expect(page.locator("#step-output")).to_contain_text("6")  # fragile is still selected
    expect(page.locator("#step-detail")).to_contain_text("fragile attempt 3")
    page.screenshot(path=str(tmp_path / "dashboard-run.png"), full_page=True)
    if os.environ.get("STEPSTREAM_DOCS_SCREENSHOT"):  # docs/dashboard.png, when asked
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)

    # Cancel the sleeping run.
    page.goto(f"{worker.url}/#/run/{napping}")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "running")
    page.click("#cancel-btn")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "cancelled")

    # The functions page counts them.
    page.click("header nav a[data-view=functions]")
    fixable = page.locator('#functions-table tr[data-function="fixable"]')
    expect(fixable).to_contain_text("0.0 %")  # its one run completed after the replay
    napper = page.locator('#functions-table tr[data-function="napper"]')
    expect(napper).to_contain_text("\u2013")  # no rate: none of its runs completed or failed
    page.screenshot(path=str(tmp_path / "dashboard-functions.png"), full_page=True)


def test_with_a_token_the_dashboard_logs_in_with_a_session_cookie(
        settings: Settings, start_worker: WorkerFactory, page: Any) -> None:
    from playwright.sync_api import expect

    token = "e2e-dashboard-token"
    worker = start_worker("tests.integration.history_functions", STEPSTREAM_HTTP_TOKEN=token)
    narrated = run_id_for("narrated", Stepstream("t", settings=settings).send(
        "test/narrated", {}))

    # No session: the dashboard sends the browser to the login form, keeping the view.
    page.goto(f"{worker.url}/#/functions")
    expect(page.locator("form#login")).to_be_visible()
    assert page.url == f"{worker.url}/login#/functions"

    page.fill("#token", "not-the-token")
    page.click("form#login button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("wrong token")

    # The token buys an HttpOnly, SameSite=Strict cookie that is not the token.
    page.fill("#token", token)
    page.click("form#login button[type=submit]")
    expect(page.locator('#functions-table tr[data-function="narrated"]')).to_be_visible()
    assert page.url == f"{worker.url}/#/functions"
    (cookie,) = page.context.cookies(worker.url)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert token not in cookie["value"]

    # The API answers the page's requests: the run shows up in the list.
    page.click("header nav a[data-view=runs]")
    expect(page.locator(f'#runs-table tr[data-run-id="{narrated}"]')).to_be_visible()

    # Logging out ends it: the dashboard asks for the token again.
    page.click("#logout")
    expect(page.locator("form#login")).to_be_visible()
    assert page.context.cookies(worker.url) == []
    page.goto(worker.url + "/")
    expect(page.locator("form#login")).to_be_visible()


def test_the_dashboard_pauses_and_resumes_a_function_and_cancels_runs_in_bulk(
        settings: Settings, start_worker: WorkerFactory, page: Any) -> None:
    from playwright.sync_api import expect

    from tests.integration.helpers import get_json, wait_for
    from tests.integration.test_operator import held

    worker = start_worker("tests.integration.operator_functions")
    client = Stepstream("t", settings=settings)

    # Pause: a new run waits; resume: it completes.
    page.goto(worker.url + "/#/functions")
    row = page.locator('#functions-table tr[data-function="gated"]')
    expect(row.locator(".state")).to_contain_text("active")
    row.locator(".pause-btn").click()
    expect(page.locator("#notice")).to_contain_text("gated paused")
    expect(row.locator(".state")).to_contain_text("paused")
    waiting = run_id_for("gated", client.send("op/gated", {}))
    wait_for(lambda: held(worker.url, waiting), what="the run held by the pause")
    row.locator(".pause-btn").click()
    expect(page.locator("#notice")).to_contain_text("gated resumed")
    expect(row.locator(".state")).to_contain_text("active")
    assert wait_for_run(worker.url, waiting)["status"] == "completed"

    # Bulk cancel from the runs list's filters, after a confirmation with the count.
    events = [client.send("op/nap", {}) for _ in range(3)]
    naps = [run_id_for("napper", e) for e in events]
    dozes = [run_id_for("dozer", e) for e in events]
    for run_id in naps + dozes:
        wait_for(lambda r=run_id: (get_json(f"{worker.url}/v1/runs/{r}") or {}).get("steps"),
                 what=f"{run_id} asleep")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.goto(worker.url + "/#/runs?function=napper&status=running")
    expect(page.locator("#runs-table tbody tr[data-run-id]")).to_have_count(3)
    page.click("#bulk-cancel")
    expect(page.locator("#notice")).to_contain_text("Cancel requested for 3 runs")
    assert asked == ["Cancel 3 running runs of napper?"]
    assert [wait_for_run(worker.url, r)["status"] for r in naps] == ["cancelled"] * 3
    assert [get_json(f"{worker.url}/v1/runs/{r}")["status"] for r in dozes] == ["running"] * 3


def test_the_run_page_shows_steps_and_progress_live_without_a_reload(
        settings: Settings, start_worker: WorkerFactory, page: Any) -> None:
    from playwright.sync_api import expect

    from tests.integration.live_functions import STEPS, gate_key

    worker = start_worker("tests.integration.live_functions")
    run_id = run_id_for("gated", Stepstream("t", settings=settings).send("test/gated", {}))
    gates = redis.Redis.from_url(settings.redis_url)
    wait_for(lambda: gates.exists(f"{settings.namespace}:run:{run_id}"), what="the run")

    page.goto(f"{worker.url}/#/run/{run_id}")
    page.evaluate("window.stillTheSamePage = true")  # gone if anything reloads the page
    expect(page.locator("#run-status")).to_have_attribute("data-status", "running")
    expect(page.locator('#progress .progress-row[data-step="s0"]')).to_contain_text(
        "waiting at gate 0")
    for step in range(STEPS):
        gates.set(gate_key(settings.namespace, run_id, step), 1)
        expect(page.locator(f'.tl-row[data-step="s{step}"]')).to_contain_text("completed")
        expect(page.locator(f'#progress .progress-row[data-step="s{step}"]')).to_have_count(0)
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#run-output")).to_contain_text('"total": 3')
    assert page.evaluate("window.stillTheSamePage") is True
    gates.close()
