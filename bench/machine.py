"""What the figures were measured on, and how busy the machine was while they were."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from .backends import postgres_admin_url


def machine_facts(scratch: Path) -> dict[str, Any]:
    """Hardware and versions; `scratch` is where the databases live (for fsync time)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": _postgres_version(),
        "fsync_ms": fsync_ms(scratch),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "sqlalchemy": version("sqlalchemy"),
    }


def machine_load() -> dict[str, Any]:
    """Load average and CPU pressure: other work on a shared machine shows up here."""
    return {
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpu_pressure_60s": _cpu_pressure(),
    }


def fsync_ms(directory: Path, samples: int = 20) -> float:
    """Median time to write and fsync 4 KB: what every durable commit waits for."""
    directory.mkdir(parents=True, exist_ok=True)
    times = []
    with tempfile.TemporaryFile(dir=directory) as scratch:
        for _ in range(samples):
            started = time.perf_counter()
            scratch.write(b"\0" * 4096)
            scratch.flush()
            os.fsync(scratch.fileno())
            times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_pressure() -> float | None:
    """`some avg60` of /proc/pressure/cpu: % of time at least one task waited for a CPU."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(part.split("=") for part in first.split()[1:])
    return float(fields["avg60"])


def _postgres_version() -> str | None:
    engine = create_engine(postgres_admin_url())
    try:
        with engine.connect() as connection:
            return connection.scalar(text("SHOW server_version"))
    except OperationalError:
        return None
    finally:
        engine.dispose()
