"""MOPIR: multi-objective parameter importance ranking (reconstruction of HyperTuner's first stage).

Per objective a random forest (scikit-learn) is fitted on the space-filling design (unit-cube inputs);
its importances (impurity or permutation) are normalised to sum to one, then averaged over objectives
with optional preference weights. The tuner keeps the top-``k`` parameters, or the smallest set whose
cumulative share reaches ``share``, never fewer than ``k_min``, and freezes the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

METHODS = ("impurity", "permutation")


@dataclass
class MOPIRResult:
    """Importance ranking: ``importances`` (name -> share, sums to 1), ``per_objective`` shares, ``order``
    (most important first), the ``selected`` names kept for the search, ``std`` (name -> standard
    deviation of the share: spread over the forest's trees for ``"impurity"``, over the permutation
    repeats for ``"permutation"``, combined over objectives as independent) and ``n_trials`` (rows the
    ranking was fitted on; 0 when unknown, e.g. a ranking stored by an older version)."""

    importances: dict[str, float]
    per_objective: dict[str, dict[str, float]]
    order: list[str]
    selected: list[str] = field(default_factory=list)
    std: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0

    def to_dict(self) -> dict:
        return {
            "importances": self.importances,
            "per_objective": self.per_objective,
            "order": self.order,
            "selected": self.selected,
            "std": self.std,
            "n_trials": self.n_trials,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> MOPIRResult:
        return cls(
            dict(d["importances"]),
            {k: dict(v) for k, v in d["per_objective"].items()},
            list(d["order"]),
            list(d.get("selected", [])),
            dict(d.get("std", {})),
            int(d.get("n_trials", 0)),
        )


def mopir(
    X: np.ndarray,
    Y: np.ndarray,
    names: Sequence[str],
    objective_names: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    method: str = "impurity",
    n_estimators: int = 200,
    seed: int = 0,
    top_k: int | None = None,
    share: float = 0.9,
    k_min: int = 2,
) -> MOPIRResult:
    """Rank parameters by their importance across all objectives.

    Args:
        X: ``(n, d)`` inputs (unit cube).
        Y: ``(n, m)`` objective values (direction does not matter for importance); rows with NaN are dropped
            per objective; objectives whose values vary over orders of magnitude may be log-transformed by
            the caller.
        names: the ``d`` parameter names.
        objective_names: the ``m`` objective names (for ``per_objective``).
        weights: preference weight per objective (>= 0, not all zero); default equal.
        method: ``"impurity"`` (mean decrease in impurity) or ``"permutation"`` (scikit-learn's
            ``permutation_importance`` on the training data).
        n_estimators: trees per forest.
        seed: random seed.
        top_k: keep exactly this many (overrides ``share``).
        share: keep the smallest prefix whose cumulative importance reaches this share.
        k_min: never keep fewer than this many.

    Raises:
        ValueError: shape mismatch, fewer than 3 usable rows, bad weights/method/share/k_min.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((40, 3))
        >>> Y = np.stack([X[:, 0], X[:, 0] + 0.1 * X[:, 1]], 1)
        >>> r = mopir(X, Y, ["a", "b", "c"], k_min=1, share=0.5)
        >>> r.order[0], r.selected
        ('a', ['a'])
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"`X` must have shape (n, {len(names)}) for names {list(names)}, got {X.shape}.")
    if len(Y) != len(X):
        raise ValueError(f"`X` and `Y` must have the same number of rows, got {len(X)} and {len(Y)}.")
    m = Y.shape[1]
    objective_names = list(objective_names) if objective_names is not None else [f"y{i}" for i in range(m)]
    if len(objective_names) != m:
        raise ValueError(f"`objective_names` must have {m} entries, got {objective_names}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (m,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"`weights` must be {m} non-negative numbers, not all zero, got {weights!r}.")
    if not 0 < share <= 1:
        raise ValueError(f"`share` must be in (0, 1], got {share!r}.")
    if not isinstance(k_min, int) or k_min < 1:
        raise ValueError(f"`k_min` must be an integer >= 1, got {k_min!r}.")
    from sklearn.ensemble import RandomForestRegressor
    from threadpoolctl import threadpool_limits

    per_obj = np.zeros((m, X.shape[1]))
    per_obj_std = np.zeros((m, X.shape[1]))
    used = np.zeros(m, dtype=bool)
    with threadpool_limits(1):
        for j in range(m):
            ok = np.isfinite(Y[:, j])
            if ok.sum() < 3 or np.ptp(Y[ok, j]) == 0:
                continue
            rf = RandomForestRegressor(
                n_estimators=n_estimators, random_state=seed, n_jobs=1, min_samples_leaf=1
            )
            rf.fit(X[ok], Y[ok, j])
            if method == "impurity":
                imp = rf.feature_importances_
                spread = np.std([tree.feature_importances_ for tree in rf.estimators_], axis=0)
            else:
                from sklearn.inspection import permutation_importance

                perm = permutation_importance(rf, X[ok], Y[ok, j], n_repeats=10, random_state=seed, n_jobs=1)
                imp, spread = perm.importances_mean, perm.importances_std
            imp = np.clip(imp, 0, None)
            if imp.sum() > 0:
                per_obj[j] = imp / imp.sum()
                per_obj_std[j] = spread / imp.sum()
                used[j] = True
    if not used.any():
        raise ValueError(
            "MOPIR needs at least 3 finished trials with a varying value for some objective; got "
            f"{int(np.isfinite(Y).all(1).sum())} usable rows."
        )
    ww = w * used
    total = (per_obj * ww[:, None]).sum(0) / ww.sum()
    total_std = np.sqrt(((per_obj_std * ww[:, None]) ** 2).sum(0)) / ww.sum()
    order_idx = np.argsort(-total, kind="stable")
    order = [names[i] for i in order_idx]
    if top_k is not None:
        if not 1 <= top_k <= len(names):
            raise ValueError(f"`top_k` must be in [1, {len(names)}], got {top_k!r}.")
        k = top_k
    else:
        cum = np.cumsum(total[order_idx])
        k = int(np.searchsorted(cum, share - 1e-12) + 1)
    k = min(max(k, k_min), len(names))
    return MOPIRResult(
        importances={names[i]: float(total[i]) for i in range(len(names))},
        per_objective={
            objective_names[j]: {names[i]: float(per_obj[j, i]) for i in range(len(names))} for j in range(m)
        },
        order=order,
        selected=order[:k],
        std={names[i]: float(total_std[i]) for i in range(len(names))},
        n_trials=int(np.isfinite(Y).any(1).sum()),
    )
