"""When a failed webhook attempt is tried again: the configured delays, each drawn within
±20% so that many deliveries failing together (a receiver's outage) do not all come back
in the same second."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

JITTER = 0.2


def retry_at(
    attempts_made: int,
    now: datetime,
    delays: Sequence[float],
    draw: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try again after `attempts_made` attempts failed; None after the last one
    (there are `len(delays) + 1` attempts: the first, then one after each delay)."""
    if attempts_made > len(delays):
        return None
    delay = delays[attempts_made - 1] * (1 + JITTER * (2 * draw() - 1))
    return now + timedelta(seconds=delay)
