"""The queue's history for the operators' charts: every SAMPLE_SECONDS, the depth of
each priority, the running jobs, and what finished in the interval with its wait and run
time percentiles.

One row per interval for the whole cluster (store/samples.py): each process looks shortly
after an interval ends and writes its sample only if no other process has, so the
history costs the same on one machine as on ten, survives restarts, and every console
shows the same charts. The figures are read from the jobs table (the jobs that finished
in the interval, through the retention sweep's index: bounded by one interval's
throughput), so they are the cluster's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from ..job import JobStatus, Priority
from ..store.overview import Finished, JobOverview
from ..store.samples import QueueSample, SampleStore

SAMPLE_SECONDS = 10
# What the console shows, and how long samples are kept (a day: about 8,640 small rows).
WINDOW_SECONDS = 3600
KEEP_SECONDS = 86_400


class QueueHistory:
    def __init__(
        self,
        samples: SampleStore,
        overview: JobOverview,
        depth: Callable[[], dict[Priority, int]],
        clock: Callable[[], datetime],
        *,
        interval: int = SAMPLE_SECONDS,
    ) -> None:
        self._samples = samples
        self._overview = overview
        self._depth = depth
        self._clock = clock
        self.interval = interval

    def sample(self) -> QueueSample | None:
        """Sample the interval that ended last, unless a process already did; the sample
        written, or None."""
        end = math.floor(self._clock().timestamp() / self.interval) * self.interval
        if self._samples.has(end):
            return None
        start = end - self.interval
        finished = self._overview.finished_between(_at(start), _at(end))
        sample = _summary(end, self._depth(), self._overview.count_running(), finished)
        self._samples.add(sample)
        if end % 3600 == 0:  # hourly, the rows that fell out of what is kept
            self._samples.prune(end - KEEP_SECONDS)
        return sample

    def recent(self, seconds: int = WINDOW_SECONDS) -> list[QueueSample]:
        """The samples of the last `seconds`, oldest first."""
        return self._samples.since(int(self._clock().timestamp()) - seconds)


def _summary(
    at: int, depth: dict[Priority, int], running: int, finished: list[Finished]
) -> QueueSample:
    ran = [job for job in finished if job.started_at is not None]
    waits = [(job.started_at - job.created_at).total_seconds() for job in ran]  # type: ignore[operator]
    runs = [(job.finished_at - job.started_at).total_seconds() for job in ran]  # type: ignore[operator]
    ends = {status: sum(job.status is status for job in finished) for status in JobStatus}
    return QueueSample(
        at=at,
        queued_high=depth.get(Priority.HIGH, 0),
        queued_normal=depth.get(Priority.NORMAL, 0),
        queued_low=depth.get(Priority.LOW, 0),
        running=running,
        succeeded=ends[JobStatus.SUCCEEDED],
        failed=ends[JobStatus.FAILED],
        cancelled=ends[JobStatus.CANCELLED],
        wait_p50=nearest_rank(waits, 0.50),
        wait_p95=nearest_rank(waits, 0.95),
        run_p50=nearest_rank(runs, 0.50),
        run_p95=nearest_rank(runs, 0.95),
    )


def nearest_rank(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile of `values` (None if empty), to the millisecond."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
