"""doctor's precision and recall, measured on generated histories of correct guests (tests/histories.py).

Healthy (FIFO and 2-level histories alike): on one sample only information and pending-but-masked
warnings; after the guests settle, a second sample with --since reports nothing.  Broken: every kind of
breakage doctor knows, injected into such histories, is named by the right rule and port in at least 99%
of cases.  The fast test is a smoke run with
fixed seeds; the slow one is the full measurement (`make doctor-check` prints the same figures).
"""

from __future__ import annotations

import os

import pytest

from tests import histories


def _check(fig: histories.Figures, healthy: int, per_kind: int) -> None:
    text = histories.report(fig)
    assert fig.healthy == fig.healthy_2l == healthy, text
    assert fig.errors == 0 and fig.unexplained_warnings == 0 and fig.unexplained == 0, text
    for kind, (found, total) in fig.recall.items():
        assert total == per_kind and found >= 0.99 * total, f"{kind}: {found}/{total}\n{text}"


def test_fast_healthy_histories_and_injections():
    fig = histories.measure(healthy=50, per_kind=10, workers=1, first_seed=1000)
    _check(fig, 50, 10)
    assert all(found == total for found, total in fig.recall.values()), histories.report(fig)


def test_a_healthy_history_replays_from_its_seed(tmp_path):
    a = histories.build(str(tmp_path / "a"), 7)
    b = histories.build(str(tmp_path / "b"), 7)
    assert a == b and a
    a = histories.build(str(tmp_path / "c"), 7, two_level=True)
    b = histories.build(str(tmp_path / "d"), 7, two_level=True)
    assert a == b and any("mask, bind-vcpu" in line for line in histories.build(str(tmp_path / "e"), 0,
                                                                               two_level=True))


@pytest.mark.slow
def test_large_measurement():
    """1,000 healthy histories of each ABI and 60 of each injected kind (about 2 minutes on 2 cores): the suite's
    share; `make doctor-check` runs the full measurement (10,000 of each, 200 per kind) and prints its figures."""
    fig = histories.measure(healthy=1_000, per_kind=60, workers=min(os.cpu_count() or 1, 2))
    print(histories.report(fig))
    _check(fig, 1_000, 60)
