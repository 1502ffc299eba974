"""The registry of running services (`service_processes`): each process keeps its own
row fresh from its heartbeat, so any process can tell operators about every machine's
workers (ops/console.py). Rows are small and few (one per process)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from .engine import TableStore, insert_unless_present
from .tables import ServiceProcessRow

_table = ServiceProcessRow.__table__
_c = _table.c


@dataclass(frozen=True)
class ProcessRecord:
    """One service as it last reported itself."""

    name: str
    machine: str
    started_at: datetime
    seen_at: datetime
    workers: int


class ProcessStore(TableStore):
    def report(self, record: ProcessRecord) -> None:
        """Write `record` as its process's row (created on its first report)."""
        values = {
            "machine": record.machine,
            "seen_at": record.seen_at,
            "workers": record.workers,
        }
        with self._writing() as connection:
            changed = connection.execute(
                update(_table).where(_c.name == record.name).values(values)
            ).rowcount
            if not changed:
                row = values | {"name": record.name, "started_at": record.started_at}
                connection.execute(insert_unless_present(_table, self._postgres).values(row))

    def forget(self, name: str) -> None:
        """A process that stops cleanly removes its row."""
        with self._writing() as connection:
            connection.execute(delete(_table).where(_c.name == name))

    def prune(self, silent_since: datetime) -> int:
        """Remove the rows of processes not heard from since `silent_since` (they died)."""
        with self._writing() as connection:
            return connection.execute(delete(_table).where(_c.seen_at < silent_since)).rowcount

    def all(self) -> list[ProcessRecord]:
        query = select(_table).order_by(_c.machine, _c.name)
        with self._engine.connect() as connection:
            return [ProcessRecord(**row._asdict()) for row in connection.execute(query)]

    def machines(self) -> set[str]:
        query = select(_c.machine).distinct()
        with self._engine.connect() as connection:
            return set(connection.execute(query).scalars())
