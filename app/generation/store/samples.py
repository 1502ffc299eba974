"""The queue's history (`queue_samples`): one row per sampling interval for the whole
cluster, whichever process wrote it first (ops/history.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import delete, select

from .engine import TableStore, insert_unless_present
from .tables import QueueSampleRow

_table = QueueSampleRow.__table__
_c = _table.c


@dataclass(frozen=True)
class QueueSample:
    """The queue at `at` (epoch seconds), and what finished in the interval before."""

    at: int
    queued_high: int
    queued_normal: int
    queued_low: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    wait_p50: float | None = None
    wait_p95: float | None = None
    run_p50: float | None = None
    run_p95: float | None = None


class SampleStore(TableStore):
    def has(self, at: int) -> bool:
        with self._engine.connect() as connection:
            return connection.execute(select(_c.at).where(_c.at == at)).first() is not None

    def add(self, sample: QueueSample) -> None:
        """Keep `sample` unless another process kept one for its moment already."""
        with self._writing() as connection:
            connection.execute(insert_unless_present(_table, self._postgres).values(asdict(sample)))

    def since(self, at: int) -> list[QueueSample]:
        """The samples from `at` on, oldest first."""
        query = select(_table).where(_c.at >= at).order_by(_c.at)
        with self._engine.connect() as connection:
            return [QueueSample(**row._asdict()) for row in connection.execute(query)]

    def prune(self, before: int) -> int:
        with self._writing() as connection:
            return connection.execute(delete(_table).where(_c.at < before)).rowcount
