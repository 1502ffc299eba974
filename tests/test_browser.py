"""The page at `/`, in headless Chromium: submit, watch, download, recover from blips.

Debian's chromium drives these tests (`.ci/run` installs it). Set SCREENSHOT_DIR to keep
the mid-generation screenshots (`make screenshot` refreshes docs/ with them).
"""

import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from app.generation import JobStatus

from .conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run should have installed Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://{live_server}/")
    expect(page.locator("#connection")).to_have_text("Live")
    yield page
    context.close()


def submit(page: Page, prompt: str, *, count: int = 3, size: str = "256x256", seed: str = "7"):
    page.fill("textarea[name=prompt]", prompt)
    page.fill("input[name=count]", str(count))
    page.select_option("select[name=size]", size)
    page.fill("input[name=seed]", seed)
    page.click("#submit-button")


def card(page: Page, prompt: str):
    return page.locator(".job", has_text=prompt)


def record_progress(page: Page) -> None:
    """Collect every value the progress bars show, in order, into `window.seenPercents`."""
    page.evaluate(
        """() => {
          window.seenPercents = [];
          new MutationObserver((changes) => {
            for (const change of changes) {
              window.seenPercents.push(Number(change.target.getAttribute("aria-valuenow")));
            }
          }).observe(document.getElementById("jobs"),
                     {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
        }"""
    )


def test_submit_watch_progress_to_100_and_download_the_zip(page, service, gate, tmp_path):
    service.submit("gate", {})  # hold the only worker so the page sees the job queue first
    assert gate.started.wait(5)
    record_progress(page)
    # Big enough images that progress comes slower than the sockets' update pacing.
    submit(page, "a lighthouse at dusk", count=3, size="1024x1024")
    job = card(page, "a lighthouse at dusk")
    expect(job).to_have_attribute("data-status", "queued")
    expect(job.locator(".detail")).to_contain_text("Next in line")
    gate.release()
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    seen = page.evaluate("window.seenPercents")
    assert seen == sorted(seen) and seen[-1] == 100 and len(set(seen)) > 2  # it moved, live
    with page.expect_download() as download:
        job.locator("a.download").click()
    path = tmp_path / "result.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        png = archive.read("image-01.png")
    assert sorted(names) == ["image-01.png", "image-02.png", "image-03.png", "manifest.json"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_page_catches_up_after_its_socket_drops(page, service, gate):
    service.submit("gate", {})
    assert gate.started.wait(5)
    submit(page, "through a network blip", count=2)
    job = card(page, "through a network blip")
    expect(job).to_have_attribute("data-status", "queued")
    page.evaluate("live.socket.close()")
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    gate.release()  # the job runs and finishes while the page is disconnected
    expect(page.locator("#connection")).to_have_text("Live")
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".detail")).to_contain_text("2 files")


def test_a_full_queue_gets_a_clear_message(page, service, gate):
    service.submit("gate", {})
    assert gate.started.wait(5)
    for _ in range(10):  # the test service's queue holds 10
        service.submit("record", {})
    submit(page, "one too many")
    expect(page.locator("#form-message")).to_contain_text("The queue is full")
    expect(card(page, "one too many")).to_have_count(0)


def test_a_failed_job_says_why(page, service):
    failed = service.submit("fail", {"prompt": "doomed"})
    wait_for(service, failed.id)
    page.reload()
    job = card(page, "doomed")
    expect(job).to_have_attribute("data-status", "failed")
    expect(job.locator(".detail")).to_contain_text("the model exploded")


def test_cancel_button_cancels_a_queued_job(page, service, gate):
    service.submit("gate", {})
    assert gate.started.wait(5)
    submit(page, "never mind")
    job = card(page, "never mind")
    job.get_by_role("button", name="Cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled")
    expect(job.get_by_role("button", name="Cancel")).to_be_hidden()


@pytest.mark.parametrize(
    "name, viewport", [("screenshot.png", LAPTOP), ("screenshot-phone.png", PHONE)]
)
def test_mid_generation_page_shows_progress_and_queue_place(
    browser, live_server, service, tmp_path, name, viewport
):
    """One job done, one rendering, one waiting: what docs/screenshot.png shows."""
    done = service.submit("images", {"prompt": "a quiet harbour at dawn", "count": 4, "seed": 3})
    wait_for(service, done.id)
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://{live_server}/")
    submit(page, "a lighthouse at dusk, stormy sea", count=16, size="1024x1024", seed="42")
    submit(page, "northern lights over a fjord", count=8, size="512x512", seed="")
    running = card(page, "a lighthouse at dusk")
    expect(running).to_have_attribute("data-status", "running")
    expect(running.locator(".detail")).to_contain_text("Image")
    page.wait_for_function(
        """() => Number(document.querySelector('.job[data-status=running] .bar')
                        .getAttribute('aria-valuenow')) >= 30"""
    )
    expect(card(page, "northern lights").locator(".detail")).to_contain_text("Next in line")
    png = page.screenshot(full_page=True)
    context.close()
    for job in service.list(statuses=[JobStatus.QUEUED, JobStatus.RUNNING]):
        service.cancel(job.id)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000  # a rendered page, not a blank one
    (tmp_path / name).write_bytes(png)
    if target := os.environ.get("SCREENSHOT_DIR"):
        shutil.copy(tmp_path / name, Path(target) / name)


def test_with_keys_the_page_asks_for_one_and_then_works(
    browser, keyed_live_server, issue_key, tmp_path
):
    key = issue_key("alice")["Authorization"].removeprefix("Bearer ")
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://{keyed_live_server}/")
    key_form = page.locator("#key-form")
    expect(key_form).to_be_visible()
    page.fill("#key-form input[name=key]", "gsk_not_a_real_key")
    page.click("#key-form button")
    expect(page.locator("#key-message")).to_contain_text("That key was refused")
    page.fill("#key-form input[name=key]", key)
    page.click("#key-form button")
    expect(page.locator("#connection")).to_have_text("Live")  # through a minted token
    # A standard key may not ask for high: the page says so before anything is sent.
    high = page.locator("select[name=priority] option[value=high]")
    expect(high).to_be_disabled()
    expect(high).to_contain_text("not for a standard key")
    submit(page, "behind a key", count=1)
    job = card(page, "behind a key")
    expect(job).to_have_attribute("data-status", "succeeded")
    # An <img> cannot send the key: the thumbnail's signed link opens without it.
    thumbnail = job.locator(".gallery img")
    expect(thumbnail).to_have_count(1)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    with page.expect_download() as download:
        job.locator("a.download").click()
    path = tmp_path / "keyed.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["image-01.png", "manifest.json"]
    # The key is kept for the tab: a reload does not ask again, and the job is still listed.
    page.reload()
    expect(page.locator("#connection")).to_have_text("Live")
    expect(key_form).to_be_hidden()
    expect(card(page, "behind a key")).to_have_attribute("data-status", "succeeded")
    # Another tab is another session: it asks.
    other = context.new_page()
    other.goto(f"http://{keyed_live_server}/")
    expect(other.locator("#key-form")).to_be_visible()
    context.close()


def test_the_gallery_shows_each_image_as_it_lands_then_all_of_them(page, service, paced):
    job = service.submit("paced", {"count": 4})
    give_up = time.monotonic() + 10
    while not service.results.files.list(job.id, service.get(job.id).lease_epoch):
        assert time.monotonic() < give_up, "image 1 did not land"
        time.sleep(0.01)
    page.reload()
    shown = card(page, "paced")
    expect(shown).to_have_attribute("data-status", "running")
    thumbnails = shown.locator(".gallery .tile:not(.preview) img")
    expect(thumbnails).to_have_count(1)
    assert paced.rendered < 4  # the page shows image 1 while image 2 waits
    expect(thumbnails.first).to_have_attribute("alt", re.compile("image-01.png"))
    paced.advance(3)
    expect(shown).to_have_attribute("data-status", "succeeded")
    expect(thumbnails).to_have_count(4)
    expect(shown.locator(".tile.preview")).to_have_count(0)
    expect(shown.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    assert shown.locator(".fill").evaluate("node => node.style.width") == "100%"
    assert all(loaded(image) for image in thumbnails.all())
    link = shown.locator(".gallery a").first
    assert link.get_attribute("target") == "_blank" and "signature=" in link.get_attribute("href")


def loaded(image) -> bool:
    return image.evaluate("node => node.complete && node.naturalWidth > 0")


def test_open_mode_offers_all_three_priorities(page):
    options = page.locator("select[name=priority] option")
    expect(options).to_have_count(3)
    for option in options.all():
        assert option.is_enabled()
    expect(page.locator("select[name=priority]")).to_have_value("normal")


def test_older_jobs_page_in_on_request(page, service):
    for _ in range(12):  # one at a time: the test service's queue holds 10
        wait_for(service, service.submit("noop", {"ms": 0}).id)
    page.reload()
    cards = page.locator(".job")
    expect(cards).to_have_count(10)
    more = page.get_by_role("button", name="Show older jobs")
    more.click()
    expect(cards).to_have_count(12)
    expect(more).to_be_hidden()
