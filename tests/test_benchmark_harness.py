"""The benchmarks' interleaving harness (benchmarks/_common.py): how many rounds it runs."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from _common import interleaved, interleaved_runs  # noqa: E402


def _clock_fns(calls: list):
    """Two candidates that record their order and take a little time each."""
    def make(name):
        def f():
            calls.append(name)
            time.sleep(0.002)
        return f
    return {"a": make("a"), "b": make("b")}


def test_rounds_are_interleaved_and_at_least_the_count():
    calls = []
    times = interleaved_runs(_clock_fns(calls), rounds=3, warmup=1, budget_s=60.0)
    assert [len(v) for v in times.values()] == [3, 3]
    assert calls == ["a", "b"] * 4  # one warm-up round, then three interleaved rounds
    assert all(t >= 0.002 for v in times.values() for t in v)


def test_min_seconds_adds_rounds_and_the_budget_stops_them():
    calls = []
    times = interleaved_runs(_clock_fns(calls), rounds=2, warmup=0, budget_s=60.0, min_s=0.06)
    n = len(times["a"])
    assert n == len(times["b"]) and n > 2  # ~4 ms a round: more rounds until 0.06 s had passed
    assert 0.06 <= sum(times["a"]) + sum(times["b"]) + 0.01 * n
    times = interleaved_runs(_clock_fns([]), rounds=1000, warmup=0, budget_s=0.02, min_s=10.0)
    assert 1 <= len(times["a"]) < 1000  # the budget ends it, whatever rounds and min_s ask


def test_number_and_before_and_stats():
    calls = []
    res = interleaved({"a": lambda: calls.append("a")}, rounds=2, warmup=0, number=5,
                      before=lambda: calls.append("before"))
    assert calls == (["before"] + ["a"] * 5) * 2
    assert res["a"]["rounds"] == 2 and 0 <= res["a"]["min"] <= res["a"]["median"]
