"""The benchmark scenarios' own logic: the shared prefill, and the depth scenario's rows."""

from datetime import UTC, datetime

from sqlalchemy import func, select

from app.generation.job import Priority
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow
from bench import depth
from bench.prefill import AGING_SECONDS, CHUNK_ROWS, scheduling_columns, write_queued

_c = JobRow.__table__.c


def test_write_queued_writes_queued_rows_in_chunks(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    count = 2 * CHUNK_ROWS + 7
    write_queued(url, count)
    write_queued(url, 2, priority=Priority.HIGH, owner="holder", params={"ms": 600_000})
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            by_kind = connection.execute(
                select(_c.owner, _c.priority, _c.status, _c.generator, func.count())
                .group_by(_c.owner, _c.priority, _c.status, _c.generator)
                .order_by(_c.owner)
            ).all()
            params = connection.scalars(select(_c.params).where(_c.owner == "holder")).all()
    finally:
        engine.dispose()
    assert [tuple(line) for line in by_kind] == [
        ("anonymous", int(Priority.NORMAL), "queued", "noop", count),
        ("holder", int(Priority.HIGH), "queued", "noop", 2),
    ]
    assert params == [{"ms": 600_000}] * 2


def test_the_sort_key_is_set_only_when_the_table_has_one():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    columns = scheduling_columns(created, Priority.LOW)
    if "sort_key" in _c:
        assert columns == {"sort_key": created.timestamp() + 2 * AGING_SECONDS}
    else:
        assert columns == {}


def at_depth(depth_: int, submit: float, claim: float) -> dict:
    return {"depth": depth_, "submit": {"rate": submit}, "claim": {"rate": claim}}


def test_depth_rows_compare_the_deep_queue_with_the_shallow_one_run_by_run():
    runs = [
        {"1000": at_depth(1000, 500, 1000), "100000": at_depth(100000, 450, 500)},
        {"1000": at_depth(1000, 400, 1000), "100000": at_depth(100000, 400, 700)},
    ]
    submit, claim = depth._rows("sqlite", runs)
    assert submit["ratio"]["runs"] == [0.9, 1.0] and submit["met"] is True
    assert claim["ratio"]["runs"] == [0.5, 0.7] and claim["met"] is False


def test_a_depth_that_failed_is_named_in_the_row_and_the_rest_is_kept():
    failed = {"depth": 100000, "error": "RuntimeError: exited", "server_error": "Boom: too many"}
    runs = [{"1000": at_depth(1000, 300, 200), "100000": failed}]
    submit, _ = depth._rows("postgres", runs)
    assert "failed at 100,000: Boom: too many" in submit["metric"]
    assert submit["ratio"] is None and submit["met"] is False
    assert submit["floor"]["median"] == 300
