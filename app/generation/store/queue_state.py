"""The queue's pause switch in the database (`queue_state`), so that a pause holds for
every process and machine and survives restarts (queue/pause.py reads it)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, select

from .engine import insert_unless_present
from .tables import QueueStateRow

_table = QueueStateRow.__table__
_c = _table.c
QUEUE = "queue"


@dataclass(frozen=True)
class Paused:
    """The queue is paused, since `at`, by `by`."""

    at: datetime
    by: str | None


class QueueStateStore:
    def __init__(
        self,
        engine: Engine,
        writing: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        self._engine = engine
        self._writing = writing or engine.begin
        self._postgres = engine.dialect.name == "postgresql"

    def paused(self) -> Paused | None:
        """The pause now in force, or None."""
        query = select(_c.paused_at, _c.paused_by).where(_c.name == QUEUE)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return Paused(row.paused_at, row.paused_by) if row and row.paused_at else None

    def pause(self, by: str | None, now: datetime) -> Paused:
        """Pause the queue (a pause already in force is kept, with its time and author)."""
        values = {"name": QUEUE, "paused_at": now, "paused_by": by}
        with self._writing() as connection:
            connection.execute(insert_unless_present(_table, self._postgres).values(values))
        # The pause in force: this one, or one made before it (or, if a resume came in
        # between, the one just made, which that resume ended).
        return self.paused() or Paused(now, by)

    def resume(self) -> bool:
        """Resume the queue; False if it was not paused."""
        with self._writing() as connection:
            return connection.execute(delete(_table).where(_c.name == QUEUE)).rowcount > 0
