"""One service process for the cluster tests: `python -m tests.cluster_node NAME`.

It is the real service (Config from the environment, `build_service`, `create_app`) with
the test generators added, served by a threaded werkzeug server on a free port that it
prints as `READY <port>`. SIGTERM drains it as gunicorn would; SIGKILL is the point.
Executions of the `count` generator are appended to $EXECUTIONS_FILE.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from app import create_app
from app.config import Config
from app.generation.generators import GeneratorRegistry
from app.generation.generators.images import ImagesGenerator
from app.wiring import build_service
from tests.generators import CountingGenerator, GateGenerator, RecordingGenerator
from tests.servers import wsgi_server


def main(name: str) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{name} %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    config = Config.from_env(dotenv=False)
    executions = Path(os.environ["EXECUTIONS_FILE"])
    generators = [ImagesGenerator(), RecordingGenerator(), GateGenerator()]
    registry = GeneratorRegistry([*generators, CountingGenerator(executions, name)])
    service = build_service(config, registry, name=name)
    server = wsgi_server(create_app(config, service=service))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_port}", flush=True)
    stop.wait()
    server.shutdown()
    service.shutdown(wait=True, timeout=5)


if __name__ == "__main__":
    main(sys.argv[1])
