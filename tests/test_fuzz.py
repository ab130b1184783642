"""Every reader of outside data under the fuzz driver, on a bounded budget (``make fuzz`` runs 100,000 each)."""

from __future__ import annotations

import os

import pytest

from tests.fuzz.harness import fuzz, load_all

COUNT = int(os.environ.get("XENEVT_FUZZ_COUNT", "3000"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(load_all()))
def test_reader_survives_fuzzing(name):
    res = fuzz(load_all()[name], COUNT, seed=int(os.environ.get("XENEVT_FUZZ_SEED", "0")))
    print(res.line())
    assert res.failures == [], "\n".join([res.line(), *res.failures[:10]])
