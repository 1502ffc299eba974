"""The command line every scenario module shares: `python -m bench.<scenario> [options]`."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends import POSTGRES, SQLITE


def scenario_main(run: Callable[..., dict[str, Any]], doc: str | None) -> None:
    """Parse `--backend`/`--repeat`, run the scenario in a scratch folder, print its JSON."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument(
        "--backend",
        action="append",
        choices=(SQLITE, POSTGRES),
        help="database to run on; repeat for several (default: sqlite)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default: 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gs-bench-") as scratch:
        result = run(workdir=Path(scratch), backends=args.backend or [SQLITE], repeat=args.repeat)
    print(json.dumps(result, indent=2))
