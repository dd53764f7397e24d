"""The batch table of ``benchmarks/hypertuner.py``: each batch method is compared with its own sequential
method (``qnehvi_q4`` with ``qnehvi``, ADUMBO's batches with ``adumbo``), and ``qnehvi_q4`` runs BoTorch's
joint batches of 4."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(hypertuner_benchmark):
    return hypertuner_benchmark


def _row(method, hv, dist=None):
    return {"problem": "DTLZ2", "method": method, "seed": 0, "hv_ratio": hv, "min_batch_distance": dist}


def test_each_batch_method_is_compared_with_its_own_sequential_method(bench):
    rows = [
        _row("adumbo", 0.50),
        _row("qnehvi", 0.70),
        _row("adumbo_q4", 0.40, 0.01),
        _row("qnehvi_q4", 0.65, 0.02),
        _row("adumbo_a4:lower_bound", 0.45, 0.03),
    ]
    table = {line.split("|")[2].strip(): line for line in bench.summarise_batch(rows).splitlines()[2:]}
    assert "| 0.400 | 0.500 | -0.100 |" in table["adumbo_q4"]
    assert "| 0.650 | 0.700 | -0.050 |" in table["qnehvi_q4"]
    assert "| 0.450 | 0.500 | -0.050 |" in table["adumbo_a4:lower_bound"]


def test_qnehvi_q4_asks_batches_of_four_after_the_initial_points(bench):
    pytest.importorskip("botorch")
    row = bench.run_one("BraninCurrin", "qnehvi_q4", seed=0, n_init=4, n_steps=4)
    assert row["n_evals"] == 8
    assert len(row["cpu_per_suggestion"]) == 1  # one batch of 4 after the 4 initial points
    assert row["min_batch_distance"] is not None and row["min_batch_distance"] > 0
