"""A few minutes of real work for the console's screenshot (`make screenshot-console`).

Serves the app on SQLite with three workers and the tests' generators, and submits a
changing load of real jobs from three owners at mixed priorities (a few of them fail),
so that the charts, the tables and the figures show what a working service looks like.
Then it opens /console in headless Chromium and saves docs/console.png. Nothing is
drawn by hand: every figure comes from the jobs that ran.

    .venv/bin/python -m tests.console_demo --minutes 6 --out docs/console.png
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from app import create_app
from app.config import Config
from app.generation import GenerationService, Priority
from app.generation.generators import GeneratorRegistry
from app.generation.generators.noop import NoopGenerator
from app.generation.results.storage import FilesystemResultStore
from app.generation.settings import ServiceSettings
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

from .generators import FailingGenerator
from .servers import wsgi_server
from .test_browser import CHROMIUM, CHROMIUM_ARGS, LAPTOP

OWNERS = ("studio-a", "studio-b", "batch-reports")


def build(workdir: Path) -> tuple[GenerationService, Config]:
    config = Config.from_env(
        {"DATABASE_URL": f"sqlite:///{workdir}/demo.db", "RESULTS_DIR": str(workdir)},
        dotenv=False,
    )
    engine = create_database_engine(config.database_url)
    schema.upgrade(engine)
    service = GenerationService(
        JobStore(engine),
        FilesystemResultStore(workdir),
        GeneratorRegistry([NoopGenerator(), FailingGenerator()]),
        ServiceSettings(workers=3, queue_size=500),
    )
    return service, config


def submit_wave(service: GenerationService, second: int, rng: random.Random) -> None:
    """A load that rises and falls over about four minutes, with bursts of LOW batch work."""
    rate = 1.6 + 1.4 * math.sin(second / 40)
    for _ in range(rng.randint(0, round(2 * rate))):
        owner = rng.choice(OWNERS)
        if owner == "batch-reports":
            priority = Priority.LOW
        else:
            priority = rng.choice([Priority.HIGH, Priority.NORMAL, Priority.NORMAL])
        if rng.random() < 0.05:
            service.submit("fail", {}, owner=owner, priority=priority)
        else:
            ms = rng.randint(300, 2500)
            service.submit("noop", {"ms": ms}, owner=owner, priority=priority)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--out", default="docs/console.png")
    args = parser.parse_args()
    rng = random.Random(19)
    with tempfile.TemporaryDirectory(prefix="console-demo-") as scratch:
        service, config = build(Path(scratch))
        app = create_app(config, service=service)
        service.start()
        server = wsgi_server(app)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            deadline = time.monotonic() + args.minutes * 60
            second = 0
            while time.monotonic() < deadline:
                submit_wave(service, second, rng)
                second += 1
                time.sleep(1)
            screenshot(f"127.0.0.1:{server.server_port}", args.out)
        finally:
            app.extensions["sockets"].close_all()
            server.shutdown()
            service.shutdown(wait=False)


def screenshot(address: str, out: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=LAPTOP)
        page.goto(f"http://{address}/console")
        page.wait_for_selector("#connection[data-state=live]")
        page.wait_for_selector("#chart-depth path.line")
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
