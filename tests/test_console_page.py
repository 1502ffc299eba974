"""The operators' console at /console, in headless Chromium: jobs and their depth arrive
live, the buttons act, and a key that is not an admin's sees nothing.

Set SCREENSHOT_DIR to keep the screenshot (`make screenshot` refreshes docs/ with it).
"""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.generation import JobStatus
from app.generation.intake.keys import Tier

from .conftest import hold_worker, wait_for
from .test_browser import LAPTOP, WAIT_MS, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("browser")


@pytest.fixture
def console(browser, live_server):  # noqa: F811
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://{live_server}/console")
    expect(page.locator("#connection")).to_have_text("Live")
    yield page
    context.close()


def test_jobs_arrive_live_and_their_depth_shows_in_the_chart(console, service, gate):
    running = hold_worker(service, gate)
    queued = [service.submit("record", {}) for _ in range(3)]
    next_up = console.locator("#next tbody tr")
    expect(next_up).to_have_count(3)  # pushed: the page was not reloaded
    for job in queued:
        expect(console.locator(f'#next tr[data-id="{job.id}"]')).to_be_visible()
    capacity = service.queue_capacity
    expect(console.locator("#queued")).to_have_text(f"3 / {capacity}")
    expect(console.locator(f'#running tr[data-id="{running.id}"]')).to_be_visible()
    service.ops.history.sample()  # a sample of the queue as it is (one is due every 10 s)
    depth_line = console.locator("#chart-depth path.line.normal")
    # The console reads the history at most every 10 s (ops/console.py, SLOW_SECONDS).
    line = re.compile(r"^M[\d.]+,[\d.]+L")
    expect(depth_line).to_have_attribute("d", line, timeout=WAIT_MS)
    # The y axis is scaled to the depth: 0 to 5 for 3 queued jobs.
    expect(
        console.locator("#chart-depth text.axis").filter(has_text=re.compile(r"^5$"))
    ).to_have_count(1)
    if os.environ.get("SCREENSHOT_DIR"):
        console.screenshot(
            path=str(Path(os.environ["SCREENSHOT_DIR"]) / "console.png"), full_page=True
        )
    gate.release()
    expect(next_up.filter(has_text="record")).to_have_count(0)


def test_cancel_and_pause_from_the_buttons_take_effect(console, service, gate):
    hold_worker(service, gate)
    doomed, kept = service.submit("record", {}), service.submit("record", {})
    row = console.locator(f'#next tr[data-id="{doomed.id}"]')
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_count(0)
    assert service.get(doomed.id).status is JobStatus.CANCELLED
    console.click("#pause")
    expect(console.locator("#paused-banner")).to_be_visible()
    expect(console.locator("#pause")).to_have_text("Resume queue")
    assert service.pause.paused
    gate.release()  # the running job finishes; the queued one does not start
    expect(console.locator("#running tbody td.empty-row")).to_be_visible()
    assert service.get(kept.id).status is JobStatus.QUEUED
    console.click("#pause")
    expect(console.locator("#paused-banner")).to_be_hidden()
    assert wait_for(service, kept.id).status is JobStatus.SUCCEEDED


def test_priority_and_retry_from_the_console(console, service, gate):
    hold_worker(service, gate)
    low = service.submit("record", {}, priority=None)
    failed = service.submit("fail", {})
    menu = console.locator(f'#next tr[data-id="{low.id}"] select')
    menu.select_option("high")
    expect(console.locator("#notice")).to_contain_text("done")
    assert service.get(low.id).priority.label == "high"
    gate.release()
    first = wait_for(service, failed.id)
    assert first.status is JobStatus.FAILED
    row = console.locator(f'#failures tr[data-id="{failed.id}"]')
    row.get_by_role("button", name="Retry").click()
    expect(console.locator("#notice")).to_contain_text(f"Retry {failed.id[:8]}: done")
    again = wait_for(service, failed.id)  # it fails again, on a fresh budget of attempts
    assert again.status is JobStatus.FAILED and again.attempts == 1
    assert again.finished_at > first.finished_at


def test_a_key_that_is_not_an_admins_is_refused(browser, keyed_app, keyed_live_server):  # noqa: F811
    keys = keyed_app.extensions["keys"]
    _, standard = keys.create("alice", Tier.PREMIUM)
    _, admin = keys.create("ops", Tier.STANDARD, admin=True)
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://{keyed_live_server}/console")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()
    page.fill("input[name=key]", standard)
    page.click("#key-form button")
    expect(page.locator("#refused")).to_contain_text("not an operator's key")
    expect(page.locator("#board")).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("Refused")
    page.fill("input[name=key]", admin)
    page.click("#key-form button")
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#refused")).to_be_hidden()
    context.close()
