"""The tuning report does not mislead: units and directions on axes, the default marked, integer trial
axes, importances only from enough trials and with their spread, and no win claimed inside the noise."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_addons.tuner import SearchSpace, write_report
from lightning_addons.tuner.mopir import mopir
from lightning_addons.tuner.report import (
    MIN_RELATIVE_SAVING,
    MIN_TRIALS_FOR_IMPORTANCE,
    axis_label,
    default_comparison,
)
from lightning_addons.tuner.trial import Objective
from lightning_addons.tuner.tuner import TuningResult

SPACE = SearchSpace(
    {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "default": 1e-3},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64], "default": 32, "layer": "system"},
    }
)
OBJECTIVES = [Objective.parse("val_acc:max"), Objective.parse("time:min")]


def _trial(number, acc, seconds, lr=1e-3, batch_size=32):
    return {
        "number": number,
        "state": "COMPLETE",
        "params": {"lr": lr, "batch_size": batch_size},
        "values": {"val_acc": acc, "time": seconds},
        "energy_source": None,
    }


def _result(history, ranking=None, space_defaults=None):
    from lightning_addons.tuner._pareto import pareto_mask, to_max

    Y = np.array([[h["values"][o.name] for o in OBJECTIVES] for h in history])
    mask = pareto_mask(to_max(Y, [o.direction for o in OBJECTIVES]))
    for h, on_front in zip(history, mask):
        h["pareto"] = bool(on_front)
    pareto = [h for h, on_front in zip(history, mask) if on_front]
    res = TuningResult(history=history, pareto=pareto, mopir=ranking, objectives=OBJECTIVES)
    res.space_defaults = space_defaults
    return res


def test_axis_labels_carry_units_and_which_way_is_better():
    assert axis_label(Objective.parse("time:min")) == "time [s] (lower is better)"
    assert axis_label(Objective.parse("energy:min")) == "energy [J] (lower is better)"
    assert axis_label(Objective.parse("val_acc:max")) == "val_acc (higher is better)"


def test_a_saving_inside_the_timing_noise_is_not_reported_as_a_win():
    base = _trial(0, 0.95, 10.0)
    slightly = _trial(1, 0.95, 10.0 * (1 - MIN_RELATIVE_SAVING / 2), lr=2e-3)
    clearly = _trial(2, 0.95, 5.0, lr=3e-3)
    defaults = base["params"]
    cmp = default_comparison(
        _result([base, clearly], space_defaults=defaults), min_saving=MIN_RELATIVE_SAVING
    )
    assert cmp["default"] is base and [b["number"] for b in cmp["better"]] == [2]
    inside = _result([base, slightly], space_defaults=defaults)
    assert default_comparison(inside, min_saving=MIN_RELATIVE_SAVING)["better"] == []
    # with no noise margin the 5% saving would count: the margin is what removes it
    assert [b["number"] for b in default_comparison(inside, min_saving=0.0)["better"]] == [1]


def test_importances_from_too_few_trials_are_withheld_with_the_count(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((4, 2))
    ranking = mopir(X, np.stack([X[:, 0], X[:, 1]], 1), ["lr", "batch_size"], k_min=1)
    assert ranking.n_trials == 4
    history = [_trial(i, 0.9 + 0.01 * i, 10.0 - i, lr=1e-3 * (i + 1)) for i in range(4)]
    history[0]["params"] = SPACE.defaults()
    paths = write_report(_result(history, ranking), tmp_path, space=SPACE)
    text = paths["summary"].read_text()
    assert "mopir" not in paths
    assert f"fitted on 4 finished trials, fewer than the {MIN_TRIALS_FOR_IMPORTANCE}" in text
    assert "| lr | 0." not in text  # no importance table


def test_importances_from_enough_trials_are_shown_with_their_spread(tmp_path):
    rng = np.random.default_rng(0)
    n = MIN_TRIALS_FOR_IMPORTANCE + 2
    X = rng.random((n, 2))
    ranking = mopir(X, np.stack([X[:, 0], X[:, 0] ** 2], 1), ["lr", "batch_size"], k_min=1)
    assert ranking.order[0] == "lr" and set(ranking.std) == {"lr", "batch_size"}
    assert all(v > 0 for v in ranking.std.values())  # trees disagree: a real spread, not a placeholder
    history = [_trial(i, 0.9 + 0.001 * i, 10.0 + i, lr=1e-3 * (i + 1)) for i in range(n)]
    history[0]["params"] = SPACE.defaults()
    paths = write_report(_result(history, ranking), tmp_path, space=SPACE)
    text = paths["summary"].read_text()
    assert "mopir" in paths and paths["mopir"].stat().st_size > 0
    assert f"Fitted on {n} finished trials" in text
    assert f"| lr | {ranking.importances['lr']:.3f} ± {ranking.std['lr']:.3f} |" in text


def test_report_figures_mark_the_default_and_use_integer_trial_ticks(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    history = [_trial(i, 0.9 + 0.01 * (i % 3), 10.0 - i, lr=1e-3 * (i + 1)) for i in range(5)]
    history[0]["params"] = SPACE.defaults()
    write_report(_result(history), tmp_path, space=SPACE)
    pareto_ax = figures[0].axes[0]
    assert pareto_ax.get_xlabel() == "val_acc (higher is better)"
    assert pareto_ax.get_ylabel() == "time [s] (lower is better)"
    labels = [t.get_text() for t in pareto_ax.get_legend().get_texts()]
    assert "default config (trial 0)" in labels
    hv_ax = figures[-1].axes[0]
    assert hv_ax.get_xlabel() == "trials finished"
    ticks = [t for t in hv_ax.get_xticks() if hv_ax.get_xlim()[0] <= t <= hv_ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("stored", [{}, {"std": {"lr": 0.1}, "n_trials": 7}])
def test_mopir_rankings_stored_by_older_versions_still_load(stored):
    from lightning_addons.tuner.mopir import MOPIRResult

    base = {
        "importances": {"lr": 1.0},
        "per_objective": {"f": {"lr": 1.0}},
        "order": ["lr"],
        "selected": ["lr"],
    }
    r = MOPIRResult.from_dict({**base, **stored})
    assert r.n_trials == stored.get("n_trials", 0) and r.std == stored.get("std", {})
    assert MOPIRResult.from_dict(r.to_dict()) == r
