"""Search spaces whose parameters are tagged by layer: ``model`` (hyper-parameters) or ``system`` (knobs
Lightning/PyTorch control: precision, batch size, workers, threads, ...).

Every parameter maps to one coordinate of the unit cube, so any ask/tell optimiser can search it:
floats and ints linearly or logarithmically, categoricals by equal-width bins of their index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("float", "int", "categorical")
LAYERS = ("model", "system")

#: System parameters HyperTuner knows how to apply before a trial's training starts, and where to.
SYSTEM_PARAMETERS: dict[str, str] = {
    "precision": "trainer.precision",
    "batch_size": "data.init_args.batch_size",
    "num_workers": "data.init_args.num_workers",
    "torch_threads": "torch.set_num_threads (and OMP_NUM_THREADS of the trial process)",
    "interop_threads": "torch.set_num_interop_threads (before any parallel work)",
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "devices": "trainer.devices (only with more than one device)",
    "strategy": "trainer.strategy (only with more than one device)",
    "compile": "torch.compile(model) on/off",
    "matmul_precision": "torch.set_float32_matmul_precision",
}


@dataclass
class Param:
    """One tunable parameter.

    Args:
        name: unique name (for system parameters one of :data:`SYSTEM_PARAMETERS` or a name handled by
            an actuator registered with the tuner).
        type: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: bounds (float/int), ``low < high``.
        log: search on a log scale (needs ``low > 0``).
        choices: values of a categorical parameter (primitives).
        default: value of the default configuration (Lightning's default for system knobs); defaults to
            the midpoint (geometric for log) or the first choice.
        layer: ``"model"`` or ``"system"``.
        target: dotted path in the trial config the value is written to (``model.init_args.lr``); model
            parameters default to ``model.init_args.<name>``, system parameters to their fixed place.

    Raises:
        ValueError: unknown type/layer, reversed or equal bounds, log scale with a non-positive bound,
            empty or duplicated choices, a default outside the range, a ``condition`` (conditional
            parameters are not supported).

    Examples:
        >>> p = Param("lr", "float", 1e-4, 1e-1, log=True)
        >>> round(p.from_unit(0.5), 6)
        0.003162
    """

    name: str
    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    default: Any = None
    layer: str = "model"
    target: str | None = None
    condition: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"parameter `name` must be a non-empty string, got {self.name!r}.")
        n = self.name
        if self.condition is not None:
            raise ValueError(
                f"parameter {n!r}: conditional parameters (`condition`) are not supported; got "
                f"{self.condition!r}. Tune the parameter unconditionally or split the study."
            )
        if self.type not in KINDS:
            raise ValueError(f"parameter {n!r}: `type` must be one of {list(KINDS)}, got {self.type!r}.")
        if self.layer not in LAYERS:
            raise ValueError(f"parameter {n!r}: `layer` must be one of {list(LAYERS)}, got {self.layer!r}.")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError(
                    f"parameter {n!r}: a categorical needs a non-empty `choices` list, got {self.choices!r}."
                )
            self.choices = list(self.choices)
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"parameter {n!r}: `choices` must be distinct, got {self.choices!r}.")
            if self.log:
                raise ValueError(f"parameter {n!r}: `log=True` is only for float/int parameters.")
            if self.default is None:
                self.default = self.choices[0]
            elif self.default not in self.choices:
                raise ValueError(
                    f"parameter {n!r}: `default` must be one of {self.choices}, got {self.default!r}."
                )
            return
        if self.low is None or self.high is None:
            raise ValueError(
                f"parameter {n!r}: a {self.type} needs `low` and `high`, got low={self.low!r}, high={self.high!r}."
            )
        if self.type == "int":
            if int(self.low) != self.low or int(self.high) != self.high:
                raise ValueError(
                    f"parameter {n!r}: int bounds must be integers, got low={self.low!r}, high={self.high!r}."
                )
            self.low, self.high = int(self.low), int(self.high)
        else:
            self.low, self.high = float(self.low), float(self.high)
        if not self.low < self.high:
            raise ValueError(
                f"parameter {n!r}: bounds reversed or equal: `low` must be < `high`, got low={self.low!r}, "
                f"high={self.high!r}."
            )
        if self.log and self.low <= 0:
            raise ValueError(
                f"parameter {n!r}: log scale needs positive bounds (low > 0), got low={self.low!r}, high={self.high!r}."
            )
        if self.default is None:
            mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
            self.default = int(round(mid)) if self.type == "int" else mid
        elif not self.low <= self.default <= self.high:
            raise ValueError(
                f"parameter {n!r}: `default` must lie in [{self.low}, {self.high}], got {self.default!r}."
            )

    # ------------------------------------------------------------ unit-cube mapping
    def from_unit(self, u: float) -> Any:
        u = float(min(max(u, 0.0), 1.0))
        if self.type == "categorical":
            k = min(int(u * len(self.choices)), len(self.choices) - 1)
            return self.choices[k]
        if self.type == "int":
            if self.log:
                lo, hi = math.log(self.low - 0.5 if self.low > 0.5 else self.low), math.log(self.high + 0.5)
                v = math.exp(lo + u * (hi - lo))
            else:
                v = self.low - 0.5 + u * (self.high - self.low + 1)
            return int(min(max(round(v), self.low), self.high))
        if abs(u - self.to_unit(self.default)) < 1e-12:
            return self.default  # exact defaults despite float round-off
        if u in (0.0, 1.0):
            return self.low if u == 0.0 else self.high
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def to_unit(self, value: Any) -> float:
        if self.type == "categorical":
            for k, c in enumerate(self.choices):
                if c == value:
                    return (k + 0.5) / len(self.choices)
            raise ValueError(f"parameter {self.name!r}: value must be one of {self.choices}, got {value!r}.")
        v = float(value)
        if not self.low <= v <= self.high:
            raise ValueError(
                f"parameter {self.name!r}: value must lie in [{self.low}, {self.high}], got {value!r}."
            )
        if self.type == "int":
            if self.log:
                lo, hi = math.log(self.low - 0.5 if self.low > 0.5 else self.low), math.log(self.high + 0.5)
                return (math.log(v) - lo) / (hi - lo)
            return (v - self.low + 0.5) / (self.high - self.low + 1)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def optuna_distribution(self):
        import optuna

        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.type == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "layer": self.layer, "default": self.default}
        if self.type == "categorical":
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, log=self.log)
        if self.target:
            d["target"] = self.target
        return d


class SearchSpace:
    """An ordered set of :class:`Param`, tagged by layer, mapped to the unit cube.

    Args:
        params: a list of :class:`Param` or a mapping ``name -> {type, low, high, log, choices, default,
            layer, target}`` (the YAML form).
        extra_system: names of further system parameters accepted (those of registered actuators).

    Raises:
        ValueError: empty space, duplicated names, an unknown system parameter, any :class:`Param` error.

    Examples:
        >>> space = SearchSpace({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        ...                      "batch_size": {"type": "categorical", "choices": [32, 64], "layer": "system"}})
        >>> space.names, space.dim
        (['lr', 'batch_size'], 2)
        >>> space.from_unit([0.0, 0.9])
        {'lr': 0.0001, 'batch_size': 64}
    """

    def __init__(
        self, params: Sequence[Param] | Mapping[str, Mapping[str, Any]], extra_system: Iterable[str] = ()
    ) -> None:
        if isinstance(params, Mapping):
            parsed = []
            for name, spec in params.items():
                if not isinstance(spec, Mapping):
                    raise ValueError(
                        f"parameter {name!r}: spec must be a mapping with `type`, `low`/`high` or `choices`, got {spec!r}."
                    )
                unknown = set(spec) - {
                    "type",
                    "low",
                    "high",
                    "log",
                    "choices",
                    "default",
                    "layer",
                    "target",
                    "condition",
                }
                if unknown:
                    raise ValueError(
                        f"parameter {name!r}: unknown keys {sorted(unknown)}; allowed: type, low, high, log, choices, "
                        "default, layer, target."
                    )
                parsed.append(Param(name=name, **dict(spec)))
            params = parsed
        params = list(params)
        if not params:
            raise ValueError(
                "the search space is empty: give at least one parameter (`space` got no entries)."
            )
        names = [p.name for p in params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameter names must be unique, duplicated: {dup}.")
        allowed = set(SYSTEM_PARAMETERS) | set(extra_system)
        for p in params:
            if p.layer == "system" and p.name not in allowed:
                raise ValueError(
                    f"unknown system parameter {p.name!r}: allowed system parameters are {sorted(allowed)} "
                    "(register an Actuator for others, or tag it layer: model with a `target`)."
                )
        self.params: list[Param] = params

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def dim(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"no parameter {name!r} in the space; parameters: {self.names}")

    def __len__(self) -> int:
        return len(self.params)

    def layer(self, name: str) -> list[str]:
        return [p.name for p in self.params if p.layer == name]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def from_unit(self, u: Sequence[float]) -> dict[str, Any]:
        u = np.asarray(u, dtype=float).reshape(-1)
        if len(u) != self.dim:
            raise ValueError(f"expected a point with {self.dim} coordinates, got {len(u)}.")
        return {p.name: p.from_unit(v) for p, v in zip(self.params, u)}

    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        missing = [n for n in self.names if n not in config]
        if missing:
            raise ValueError(f"configuration lacks parameters {missing}; got keys {sorted(config)}.")
        return np.array([p.to_unit(config[p.name]) for p in self.params])

    def unit_grid(self, max_levels: int = 64) -> list[list[float] | None]:
        """Per parameter, the unit-cube values it can take when it is discrete (a categorical's bin
        centres, an int's values if it has at most ``max_levels`` of them), else ``None`` (continuous).

        Examples:
            >>> SearchSpace({"batch_size": {"type": "categorical", "choices": [32, 64], "layer": "system"},
            ...              "lr": {"type": "float", "low": 0.0, "high": 1.0}}).unit_grid()
            [[0.25, 0.75], None]
        """
        out: list[list[float] | None] = []
        for p in self.params:
            if p.type == "categorical":
                out.append([p.to_unit(c) for c in p.choices])
            elif p.type == "int" and p.high - p.low + 1 <= max_levels:
                out.append([p.to_unit(v) for v in range(int(p.low), int(p.high) + 1)])
            else:
                out.append(None)
        return out

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}

    def optuna_distributions(self) -> dict[str, Any]:
        return {p.name: p.optuna_distribution() for p in self.params}
