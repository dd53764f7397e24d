"""SearchSpace/Param: unit-cube mapping and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_addons.tuner import SearchSpace
from lightning_addons.tuner.space import Param


def _space():
    return SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "default": 1e-3},
            "width": {"type": "float", "low": 0.5, "high": 2.0},
            "layers": {"type": "int", "low": 1, "high": 4},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64], "default": 64, "layer": "system"},
            "precision": {"type": "categorical", "choices": ["32-true", "bf16-mixed"], "layer": "system"},
        }
    )


def test_space_round_trips_configs_through_the_unit_cube():
    space = _space()
    rng = np.random.default_rng(0)
    for u in rng.random((50, space.dim)):
        cfg = space.from_unit(u)
        assert 1e-4 <= cfg["lr"] <= 1e-1 and cfg["layers"] in (1, 2, 3, 4)
        assert space.from_unit(space.to_unit(cfg)) == pytest.approx(cfg)
    assert space.from_unit(space.to_unit(space.defaults())) == pytest.approx(space.defaults())


def test_space_tags_layers_and_int_bins_are_uniform():
    space = _space()
    assert space.layer("system") == ["batch_size", "precision"]
    assert space.layer("model") == ["lr", "width", "layers"]
    counts = np.bincount([space["layers"].from_unit(u) for u in np.linspace(0, 1, 4000)], minlength=5)[1:]
    assert counts.min() > 900  # each integer gets a quarter of the cube
    assert space["lr"].from_unit(0.5) == pytest.approx(10**-2.5)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({}, "search space is empty"),
        ({"lr": {"type": "float", "low": 1.0, "high": 0.1}}, "bounds reversed"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log scale needs positive bounds"),
        ({"lr": {"type": "float", "low": -1.0, "high": 0.1, "log": True}}, "log scale needs positive bounds"),
        (
            {"cpu_governor": {"type": "categorical", "choices": ["a"], "layer": "system"}},
            "unknown system parameter 'cpu_governor'",
        ),
        (
            {"x": {"type": "double", "low": 0, "high": 1}},
            r"`type` must be one of \['float', 'int', 'categorical'\]",
        ),
        (
            {"x": {"type": "float", "low": 0, "high": 1, "layer": "os"}},
            r"`layer` must be one of \['model', 'system'\]",
        ),
        ({"x": {"type": "categorical", "choices": []}}, "non-empty `choices`"),
        ({"x": {"type": "float", "low": 0, "high": 1, "default": 2}}, r"`default` must lie in \[0.0, 1.0\]"),
        (
            {"x": {"type": "float", "low": 0, "high": 1, "condition": {"optimizer": "sgd"}}},
            "conditional parameters",
        ),
        ({"x": {"type": "float", "lo": 0, "high": 1}}, r"unknown keys \['lo'\]"),
    ],
)
def test_space_rejects_bad_input_with_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(spec)


def test_space_rejects_duplicate_names_and_out_of_range_values():
    with pytest.raises(ValueError, match=r"duplicated: \['x'\]"):
        SearchSpace([Param("x", "float", 0, 1), Param("x", "float", 0, 1)])
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\], got 3"):
        SearchSpace({"x": {"type": "float", "low": 0, "high": 1}}).to_unit({"x": 3})
