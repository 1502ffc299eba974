"""The benchmark suite's arithmetic and table: medians, spreads and per-run ratios."""

from bench.report import markdown_table, row
from bench.stats import percentile, ratios, summary


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([7.0], 99) == 7.0


def test_summary_keeps_every_run_with_median_and_spread():
    assert summary([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": [3.0, 1.0, 2.0],
    }


def test_ratios_pair_each_run_with_the_floor_measured_beside_it():
    assert ratios([50.0, 80.0], [100.0, 100.0]) == [0.5, 0.8]


def test_a_row_compares_ours_with_the_floor_run_by_run():
    item = row("sqlite", "submits/s", [600, 900], [1000, 1000], unit="req/s", target="≥ 0.8x")
    assert item["ratio"]["runs"] == [0.6, 0.9]
    assert item["ratio"]["median"] == 0.75


def test_the_table_shows_median_spread_ratio_and_verdict():
    item = row("sqlite", "p99", [2.0, 4.0], [1.0, 1.0], unit="ms", target="≤ 3 ms", met=True)
    table = markdown_table([{"title": "2. dispatch", "rows": [item]}])
    assert (
        "| 2. dispatch | sqlite | p99 | 3.00 (2.00–4.00) ms | 1.00 ms | 3.00x | ≤ 3 ms ✅ |"
        in table
    )


def test_a_failed_scenario_is_a_row_that_says_so_and_the_others_stay():
    rows = [row("sqlite", "jobs/s", [10.0], [20.0], unit="jobs/s")]
    table = markdown_table(
        [
            {"title": "3. drain", "rows": rows},
            {"title": "pg_drain", "rows": [], "failed": "TimeoutError: not ready"},
        ]
    )
    assert "| pg_drain | | failed: TimeoutError: not ready |" in table
    assert "| 3. drain | sqlite | jobs/s | 10" in table
