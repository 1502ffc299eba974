"""Testing a generator needs no service: call validate() and run() with a fake context."""

from __future__ import annotations

import pickle

import pytest
from gs_spirograph import SpirographGenerator

from app.generation import JobCancelled


class FakeContext:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.reports: list[tuple] = []
        self.cancel_after = cancel_after

    def progress(self, stage, percent, message="", *, step=None, total=None):
        self.reports.append((stage, percent, message, step, total))

    def check_cancelled(self):
        if self.cancel_after is not None and len(self.reports) >= self.cancel_after:
            raise JobCancelled("cancelled")


def test_validate_fills_defaults_and_fixes_a_seed():
    clean, errors = SpirographGenerator().validate({})
    assert errors == {}
    assert (clean["count"], clean["size"], clean["detail"]) == (4, 512, 180)
    assert isinstance(clean["seed"], int)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"count": 0}, "count"),
        ({"size": "big"}, "size"),
        ({"detail": 10_000}, "detail"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "x"}, "seed"),
        ({"seed": [1]}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"x": 1}, "x"),
    ],
)
def test_validate_reports_field_errors(params, field):
    assert field in SpirographGenerator().validate(params)[1]


def test_a_whole_number_is_taken_as_json_schema_means_it():
    clean, errors = SpirographGenerator().validate({"count": 2.0, "seed": 7.0})
    assert errors == {} and (clean["count"], clean["seed"]) == (2, 7)
    assert isinstance(clean["count"], int) and isinstance(clean["seed"], int)


def test_run_draws_one_svg_per_drawing_and_reports_progress():
    generator = SpirographGenerator()
    params, _ = generator.validate({"count": 2, "seed": 7, "size": 128})
    context = FakeContext()
    files = list(generator.run(params, context))
    assert [f.name for f in files] == ["spiro-01.svg", "spiro-02.svg"]
    assert files[0].data.startswith(b"<svg")
    assert [r[1] for r in context.reports] == [0, 50, 100]


def test_the_same_seed_draws_the_same_curves():
    generator = SpirographGenerator()
    params, _ = generator.validate({"count": 1, "seed": 42})
    first = list(generator.run(params, FakeContext()))
    assert first == list(generator.run(params, FakeContext()))


def test_run_stops_at_a_checkpoint_when_cancelled():
    generator = SpirographGenerator()
    params, _ = generator.validate({"count": 5, "seed": 1})
    with pytest.raises(JobCancelled):
        list(generator.run(params, FakeContext(cancel_after=2)))


def test_it_is_picklable_as_cpu_bound_generators_must_be():
    assert pickle.loads(pickle.dumps(SpirographGenerator())).name == "spirograph"
