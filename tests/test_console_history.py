"""The console's history (ops/history.py), its charts (web/charts.py) and its stream's
messages, without a server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import OperationalError

from app.generation import JobStatus, Priority
from app.generation.ops.history import KEEP_SECONDS, QueueHistory, _summary
from app.generation.store.overview import Finished, JobOverview
from app.generation.store.samples import SampleStore
from app.web.charts import Series, line_chart, nice_ceiling
from app.web.console_stream import ChartCache, ConsoleFeed, render_charts

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def finished(status, wait, run):
    started = None if run is None else T0 + timedelta(seconds=wait)
    end = T0 + timedelta(seconds=wait + (run or 0))
    return Finished(status, T0, started, end)


def test_a_sample_counts_outcomes_and_takes_percentiles_of_the_jobs_that_ran():
    jobs = [finished(JobStatus.SUCCEEDED, wait, 2.0) for wait in range(1, 21)]
    jobs += [finished(JobStatus.FAILED, 0.5, 1.0), finished(JobStatus.CANCELLED, 3.0, None)]
    sample = _summary(100, {Priority.HIGH: 1, Priority.LOW: 4}, 3, jobs)
    assert (sample.queued_high, sample.queued_normal, sample.queued_low) == (1, 0, 4)
    assert (sample.succeeded, sample.failed, sample.cancelled, sample.running) == (20, 1, 1, 3)
    # 21 jobs ran (the cancelled one never started): waits 0.5, 1..20 s.
    assert sample.wait_p50 == 10.0 and sample.wait_p95 == 19.0
    assert sample.run_p50 == 2.0
    empty = _summary(100, {}, 0, [])
    assert empty.wait_p50 is None and empty.run_p95 is None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_one_sample_per_interval_whichever_process_takes_it(service):
    engine = service.store.engine
    clock = Clock()
    processes = [
        QueueHistory(SampleStore(engine), JobOverview(engine), lambda: {}, clock) for _ in range(2)
    ]
    clock.now = T0 + timedelta(seconds=14)
    assert processes[0].sample() is not None
    assert processes[1].sample() is None  # the same interval: already written
    clock.now = T0 + timedelta(seconds=21)
    assert processes[1].sample() is not None
    assert [s.at for s in processes[0].recent(60)] == [
        int(T0.timestamp()) + 10,
        int(T0.timestamp()) + 20,
    ]
    # Hourly, samples older than a day are removed.
    clock.now = T0 + timedelta(seconds=KEEP_SECONDS + 3600)
    processes[0].sample()
    assert [s.at for s in processes[0].recent(KEEP_SECONDS * 2)] == [int(clock.now.timestamp())]


def test_nice_ceilings_are_round():
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 12, 26, 180, 4100)] == [
        1,
        1,
        1,
        5,
        10,
        20,
        50,
        200,
        5000,
    ]


def test_a_chart_draws_lines_broken_where_data_is_missing_and_escapes_labels():
    svg = line_chart(
        "<b>title</b>",
        [Series('a"b', "normal", [(0, 1.0), (10, None), (20, 2.0), (30, 4.0)])],
        0,
        60,
    )
    assert "<b>" not in svg and "&lt;b&gt;title" in svg
    path = re.search(r'<path class="line normal" d="([^"]+)"', svg).group(1)
    assert path.count("M") == 2 and path.count("L") == 1  # a gap after the first point
    assert "no samples yet" not in svg
    assert "no samples yet" in line_chart("empty", [Series("a", "normal", [])], 0, 60)


def test_the_depth_chart_ends_with_the_depth_now():
    at = 1_000_000
    history = [
        dict(
            at=at - 20,
            queued_high=0,
            queued_normal=2,
            queued_low=0,
            running=0,
            succeeded=6,
            failed=0,
            cancelled=0,
            wait_p50=1.0,
            wait_p95=2.0,
            run_p50=0.5,
            run_p95=0.9,
        )
    ]
    charts = render_charts(history, {"high": 0, "normal": 8, "low": 0}, at, 10)
    assert set(charts) == {"depth", "latency", "throughput"}
    assert ">10<" in charts["depth"]  # the axis reaches the 8 queued now
    assert ">50<" in charts["throughput"]  # 6 in 10 s: 36 a minute, on a 0..50 axis


def test_the_stream_says_so_while_the_database_is_unreachable():
    class Unreachable:
        def snapshot(self):
            raise OperationalError("SELECT 1", {}, ConnectionError("connection refused"))

    message = ConsoleFeed(Unreachable(), ChartCache()).message()
    assert message["type"] == "error"
    assert message["error"]["code"] == "database_unavailable"
