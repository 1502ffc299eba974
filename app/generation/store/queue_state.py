"""Operators' switches in the database (`queue_state`), so that they hold for every
process and machine and survive restarts (queue/pause.py reads them): the whole queue's
pause (row `queue`), and each drained machine's (row `drain:<machine>`), whose workers
claim nothing while the others go on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from .engine import TableStore, insert_unless_present
from .tables import QueueStateRow

_table = QueueStateRow.__table__
_c = _table.c
QUEUE = "queue"
DRAIN = "drain:"


@dataclass(frozen=True)
class Paused:
    """The queue (or a machine) is paused, since `at`, by `by`."""

    at: datetime
    by: str | None


@dataclass(frozen=True)
class Holds:
    """What keeps one machine's workers from claiming: the queue's pause, its drain."""

    queue: Paused | None = None
    machine: Paused | None = None


class QueueStateStore(TableStore):
    def paused(self) -> Paused | None:
        """The pause now in force, or None."""
        return self.holds(None).queue

    def holds(self, machine: str | None) -> Holds:
        """The queue's pause and `machine`'s drain, in one read."""
        names = [QUEUE] if machine is None else [QUEUE, DRAIN + machine]
        query = select(_c.name, _c.paused_at, _c.paused_by).where(_c.name.in_(names))
        with self._engine.connect() as connection:
            found = {
                row.name: Paused(row.paused_at, row.paused_by) for row in connection.execute(query)
            }
        return Holds(found.get(QUEUE), found.get(DRAIN + machine) if machine else None)

    def pause(self, by: str | None, now: datetime) -> Paused:
        """Pause the queue (a pause already in force is kept, with its time and author)."""
        return self._hold(QUEUE, by, now) or Paused(now, by)

    def resume(self) -> bool:
        """Resume the queue; False if it was not paused."""
        return self._release(QUEUE)

    def drain(self, machine: str, by: str | None, now: datetime) -> Paused:
        """Drain `machine`: its workers finish what they run and claim nothing more."""
        return self._hold(DRAIN + machine, by, now) or Paused(now, by)

    def undrain(self, machine: str) -> bool:
        """End `machine`'s drain; False if it was not drained."""
        return self._release(DRAIN + machine)

    def drains(self) -> dict[str, Paused]:
        """Every drained machine, with when and by whom."""
        query = select(_c.name, _c.paused_at, _c.paused_by).where(_c.name.startswith(DRAIN))
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return {row.name.removeprefix(DRAIN): Paused(row.paused_at, row.paused_by) for row in rows}

    def _hold(self, name: str, by: str | None, now: datetime) -> Paused | None:
        values = {"name": name, "paused_at": now, "paused_by": by}
        with self._writing() as connection:
            connection.execute(insert_unless_present(_table, self._postgres).values(values))
        # The hold in force: this one, or one made before it (or, if a release came in
        # between, None: the caller answers with the one just made, which it ended).
        query = select(_c.paused_at, _c.paused_by).where(_c.name == name)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return Paused(row.paused_at, row.paused_by) if row and row.paused_at else None

    def _release(self, name: str) -> bool:
        with self._writing() as connection:
            return connection.execute(delete(_table).where(_c.name == name)).rowcount > 0
