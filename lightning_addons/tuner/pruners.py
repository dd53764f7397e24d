"""Multi-objective early stopping of trials: pure rules that decide from the partial objective vectors of
the trials at one fidelity (NumPy, and SciPy's Student-t quantile; no Lightning, no Optuna).

A trial reports its objective vector after each validation (step 1, 2, ...). At a *rung* step the pruner
compares it with every other trial of the study that reported the same step (running, finished or
pruned, from any worker: the tuner reads them from the study storage) and says whether to stop it.
Optuna's pruners (median, successive halving, Hyperband) and Ray Tune's ASHA are single-objective; the
rule here ranks by non-dominated sorting instead of by one value.

Examples:
    >>> p = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=3)
    >>> p.rungs(8)
    [1, 2, 4, 8]
    >>> peers = [[0.9, 10.0], [0.8, 5.0], [0.95, 12.0]]   # (val_acc max, time min) at step 2
    >>> p.should_prune(2, [0.7, 11.0], peers, ["maximize", "minimize"])   # dominated by (0.9, 10)
    True
    >>> p.should_prune(2, [0.99, 20.0], peers, ["maximize", "minimize"])  # on the front: never pruned
    False
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from lightning_addons.tuner._pareto import (
    check_directions,
    dominates,
    hypervolume,
    log_columns,
    nondominated_mask,
    to_max,
)

TIE_BREAKS = ("hypervolume", "none")
SPREADS = ("local", "global")
CURVE_MODELS = ("line", "gp")


class TrialPruned(Exception):
    """Raised by a trial's ``report(step, metrics)`` when the pruner stops the trial (in-process trials)."""

    def __init__(self, step: int, message: str = "") -> None:
        super().__init__(message or f"pruned at step {step}")
        self.step = int(step)


def nondominated_ranks(F: np.ndarray) -> np.ndarray:
    """Non-dominated sorting rank of each row of ``F`` (maximisation): 0 for the front, 1 for the front
    of the rest, ... Equal rows share a rank (neither dominates the other).

    Examples:
        >>> nondominated_ranks(np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [0.0, 0.0]])).tolist()
        [0, 0, 1, 2]
    """
    F = np.asarray(F, dtype=float)
    D = dominates(F, F)  # D[i, j]: i dominates j
    ranks = np.full(len(F), -1, dtype=int)
    left = np.ones(len(F), dtype=bool)
    r = 0
    while left.any():
        front = left & ~(D[left].any(0))  # not dominated by any remaining row
        ranks[front] = r
        left &= ~front
        r += 1
    return ranks


def hv_contributions(F: np.ndarray) -> np.ndarray:
    """Exclusive hypervolume contribution of each row of ``F`` (maximisation, rows of one front), in the
    box of ``F`` normalised to [0, 1] per objective with the reference point at -0.1."""
    F = np.asarray(F, dtype=float)
    if len(F) == 1:
        return np.ones(1)
    lo, hi = F.min(0), F.max(0)
    Z = (F - lo) / np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(F.shape[1], -0.1)
    total = hypervolume(Z, ref)
    return np.array([total - hypervolume(np.delete(Z, i, 0), ref) for i in range(len(Z))])


class ParetoHalvingPruner:
    """Asynchronous successive halving on the non-dominated rank (multi-objective ASHA).

    Rungs are the steps ``min_resource * reduction_factor**k`` (steps count validations from 1: with one
    validation per epoch, epochs). At a rung, the trial and every other trial that reported this step are
    sorted by non-dominated rank (``tie_break="hypervolume"``: within the rank at the cut, by exclusive
    hypervolume contribution, larger first); the best ``max(1, n // reduction_factor)`` go on. A trial on
    the non-dominated front of its rung is never pruned, nor is any trial while fewer than ``min_peers``
    trials (itself included) reached the rung: the first trials of a study always run to the end.

    Args:
        min_resource: the first rung (a step >= 1).
        reduction_factor: keep one in ``reduction_factor`` at each rung (an integer >= 2).
        min_peers: trials at a rung needed before deciding (>= 2).
        tie_break: ``"hypervolume"`` or ``"none"`` (every trial of the rank at the cut goes on).
        margin: a trial below the cut is pruned only when another trial at the rung beats it by more
            than ``margin`` times the rung's range in *every* objective (additive epsilon-dominance), so
            that measurement noise (a timing) or a small lead cannot stop it: ``0`` (default) prunes on
            plain domination, ``0.05`` asks for a 5% lead in each objective. A number in [0, 1).
        max_resource: optional last step of a full trial (e.g. ``max_epochs``): no rung at or after it, so
            a trial that has finished its training is never stopped at its last report (which would throw
            its full result away). ``None`` (default): every ``min_resource * reduction_factor**k`` is a rung.

    Raises:
        ValueError: a bad argument, named with the allowed values and the value received.

    Examples:
        >>> ParetoHalvingPruner(reduction_factor=3).rungs(10)
        [1, 3, 9]
    """

    def __init__(
        self,
        min_resource: int = 1,
        reduction_factor: int = 3,
        min_peers: int = 4,
        tie_break: Literal["hypervolume", "none"] = "hypervolume",
        margin: float = 0.0,
        max_resource: int | None = None,
    ) -> None:
        for name, value, low in (
            ("min_resource", min_resource, 1),
            ("reduction_factor", reduction_factor, 2),
            ("min_peers", min_peers, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"pruner `{name}` must be an integer >= {low}, got {value!r}.")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"pruner `tie_break` must be one of {list(TIE_BREAKS)}, got {tie_break!r}.")
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_peers = min_peers
        self.tie_break = tie_break
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
            raise ValueError(f"pruner `margin` must be a number in [0, 1), got {margin!r}.")
        self.margin = float(margin)
        if max_resource is not None and (
            isinstance(max_resource, bool) or not isinstance(max_resource, int) or max_resource < 2
        ):
            raise ValueError(f"pruner `max_resource` must be None or an integer >= 2, got {max_resource!r}.")
        self.max_resource = max_resource

    def config(self) -> dict[str, Any]:
        """The constructor arguments (stored in the study's fingerprint)."""
        return {
            "class": type(self).__name__,
            "min_resource": self.min_resource,
            "reduction_factor": self.reduction_factor,
            "min_peers": self.min_peers,
            "tie_break": self.tie_break,
            **({"margin": self.margin} if self.margin else {}),
            **({"max_resource": self.max_resource} if self.max_resource is not None else {}),
        }

    def is_rung(self, step: int) -> bool:
        """Whether ``step`` is a rung (``min_resource * reduction_factor**k``)."""
        step = int(step)
        if step < self.min_resource or step % self.min_resource:
            return False
        if self.max_resource is not None and step >= self.max_resource:
            return False
        q = step // self.min_resource
        while q % self.reduction_factor == 0:
            q //= self.reduction_factor
        return q == 1

    def rungs(self, max_step: int) -> list[int]:
        """The rungs up to ``max_step``."""
        out, r = [], self.min_resource
        if self.max_resource is not None:
            max_step = min(max_step, self.max_resource - 1)
        while r <= max_step:
            out.append(r)
            r *= self.reduction_factor
        return out

    def should_prune(
        self,
        step: int,
        values: Sequence[float],
        peers: Sequence[Sequence[float]],
        directions: Sequence[str],
    ) -> bool:
        """Whether the trial with objective vector ``values`` at ``step`` stops, beside ``peers`` (the
        vectors of the other trials at the same step). Non-finite peers are ignored; a non-finite
        ``values`` is never pruned here (the tuner fails such a trial on its own terms)."""
        if not self.is_rung(step):
            return False
        dirs = check_directions(directions)
        v = np.asarray(values, dtype=float).reshape(-1)
        if len(v) != len(dirs) or not np.all(np.isfinite(v)):
            return False
        P = np.asarray([p for p in peers if len(p) == len(dirs)], dtype=float).reshape(-1, len(dirs))
        P = P[np.all(np.isfinite(P), axis=1)]
        n = len(P) + 1
        if n < self.min_peers:
            return False
        F = to_max(np.vstack([v[None], P]), dirs)
        ranks = nondominated_ranks(F)
        if ranks[0] == 0:
            return False
        keep = max(1, n // self.reduction_factor)
        ahead = int(np.sum(ranks < ranks[0]))
        if ahead >= keep:
            return self._clearly_dominated(F)
        same = np.flatnonzero(ranks == ranks[0])
        if self.tie_break == "none" or ahead + len(same) <= keep:
            return False
        contrib = hv_contributions(F[same])
        better = int(np.sum(contrib > contrib[0] + 1e-12))  # same[0] == 0: this trial
        return ahead + better >= keep and self._clearly_dominated(F)

    def _clearly_dominated(self, F: np.ndarray) -> bool:
        """Whether row 0 of ``F`` (maximisation) is beaten by another row by more than ``margin`` times
        the rows' range in every objective (always true for ``margin=0``: the caller saw it dominated)."""
        if not self.margin:
            return True
        span = F.max(0) - F.min(0)
        lead = F[1:] - F[0]
        return bool(np.any(np.all(lead > self.margin * span, axis=1)))


class LearningCurvePruner:
    """Stops a trial whose full run is, with high probability, dominated by the front of the study's
    complete trials (a learning-curve model fitted across trials).

    At every step from ``min_resource`` on (before ``max_resource``) the pruner fits, per objective, a
    straight line from the value at this step to the final value over the study's complete trials that
    reported this step (ordinary least squares in the objective's modelling space: the log for log-scaled
    objectives such as ``time``, whose final value is then the partial value times a fitted per-step rate).
    The trial's final value gets the one-sided Student-t prediction interval of that line (which widens
    with the residual spread and with the distance from the fitted trials' partial values). With
    ``spread="local"`` (default) the residual spread is measured among the ``max(min_complete, n/3)``
    complete trials whose partial values were nearest the trial's (of ``n``): partial values that
    predicted the final poorly (late learners near chance accuracy) give a wide interval there, while
    well-predicted ones stay narrow; ``"global"`` uses all residuals (textbook least squares). The
    *optimistic* corner takes every objective at its ``quantile`` on the good side. The trial stops when a
    complete trial's final vector dominates that corner: under the model, the full run then has a
    probability of at most ``d * (1 - quantile)`` (``d`` objectives) of not being dominated by it.
    Nothing is pruned while fewer than ``min_complete`` complete trials reported the step, so the first
    trials of a study run to the end and the model learns from them. A trial that is about as good as
    the front at this step, or that trained trials with a similar partial value turned into front
    trials, goes on; a trial at chance accuracy among complete trials that never recovered from there
    stops at the first step.

    Args:
        min_complete: complete trials with a value at the step needed before deciding (an integer >= 3).
        quantile: one-sided prediction quantile per objective, in (0.5, 1) (0.9 default; larger prunes
            less).
        min_resource: the first step at which a trial may stop (an integer >= 1).
        max_resource: optional last step of a full trial (e.g. ``max_epochs``): no decision at or after
            it, so a finished training is never thrown away. Set it. ``None``: every step from
            ``min_resource`` on.
        spread: ``"local"`` or ``"global"`` residual spread (see above).
        model: ``"line"`` (default): the final value from the partial value alone, as above. ``"gp"``: the
            same line plus a Gaussian-process correction of its residuals over the trial's configuration
            (unit-cube coordinates of its parameters) and its partial value (scikit-learn
            ``GaussianProcessRegressor``, ARD RBF + white noise, fitted by marginal likelihood); the bound
            is then the GP's predictive mean plus its ``quantile`` normal quantile times its predictive
            standard deviation (noise included). Two trials with the same partial accuracy can then get
            different forecasts: a large-batch or small-learning-rate configuration that the complete trials
            showed learning late is not judged like a configuration that has settled. Needs the
            configurations: the tuner passes them (``uses_params``); called without them it falls back to
            ``"line"``. ``spread`` is not used by ``"gp"`` (the GP's noise and lengthscales set the width).

    Raises:
        ValueError: a bad argument, named with the allowed values and the value received.

    Examples:
        >>> p = LearningCurvePruner(min_complete=3, quantile=0.9, max_resource=6)
        >>> done = [([0.5, 1.0], [0.9, 6.0]), ([0.4, 1.1], [0.78, 6.1]), ([0.3, 2.0], [0.71, 12.0])]
        >>> dirs = ["maximize", "minimize"]   # (val_acc, time); log-scaled time
        >>> p.should_prune(1, [0.1, 1.5], [], dirs, complete=done, log_scale=[False, True])
        True
        >>> p.should_prune(1, [0.6, 1.0], [], dirs, complete=done, log_scale=[False, True])
        False
    """

    #: the tuner passes ``complete=[(values at the step, final values), ...]`` and ``log_scale``
    uses_complete = True

    def __init__(
        self,
        min_complete: int = 5,
        quantile: float = 0.9,
        min_resource: int = 1,
        max_resource: int | None = None,
        spread: Literal["local", "global"] = "local",
        model: Literal["line", "gp"] = "line",
    ) -> None:
        for name, value, low in (("min_complete", min_complete, 3), ("min_resource", min_resource, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"pruner `{name}` must be an integer >= {low}, got {value!r}.")
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.5 < quantile < 1.0:
            raise ValueError(f"pruner `quantile` must be a number in (0.5, 1), got {quantile!r}.")
        if max_resource is not None and (
            isinstance(max_resource, bool)
            or not isinstance(max_resource, int)
            or max_resource <= min_resource
        ):
            raise ValueError(
                f"pruner `max_resource` must be None or an integer > min_resource ({min_resource}), "
                f"got {max_resource!r}."
            )
        if spread not in SPREADS:
            raise ValueError(f"pruner `spread` must be one of {list(SPREADS)}, got {spread!r}.")
        if model not in CURVE_MODELS:
            raise ValueError(f"pruner `model` must be one of {list(CURVE_MODELS)}, got {model!r}.")
        self.spread = spread
        self.model = model
        self._gp_cache: dict = {}
        self.min_complete = min_complete
        self.quantile = float(quantile)
        self.min_resource = min_resource
        self.max_resource = max_resource

    @property
    def uses_params(self) -> bool:
        """Whether the tuner should also pass ``params`` (the trial's unit-cube configuration) and
        ``complete_params`` (the complete trials', aligned with ``complete``): only ``model="gp"`` uses them."""
        return self.model == "gp"

    def config(self) -> dict[str, Any]:
        """The constructor arguments (stored in the study's fingerprint)."""
        return {
            "class": type(self).__name__,
            "min_complete": self.min_complete,
            "quantile": self.quantile,
            "min_resource": self.min_resource,
            **({"max_resource": self.max_resource} if self.max_resource is not None else {}),
            "spread": self.spread,
            **({"model": self.model} if self.model != "line" else {}),
        }

    def is_rung(self, step: int) -> bool:
        """Whether the pruner decides at ``step`` (every step from ``min_resource``, before ``max_resource``)."""
        step = int(step)
        return step >= self.min_resource and (self.max_resource is None or step < self.max_resource)

    def rungs(self, max_step: int) -> list[int]:
        """The steps up to ``max_step`` at which it decides."""
        return [s for s in range(self.min_resource, int(max_step) + 1) if self.is_rung(s)]

    def optimistic_final(
        self,
        values: Sequence[float],
        complete: Sequence[tuple[Sequence[float], Sequence[float]]],
        directions: Sequence[str],
        log_scale: Sequence[bool] | None = None,
        params: Sequence[float] | None = None,
        complete_params: Sequence[Sequence[float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The optimistic corner of the predicted final vector, in the *maximisation, modelling* space
        (log where ``log_scale``, then negated for minimised objectives), and the complete trials' finals
        in the same space, or ``None`` when fewer than ``min_complete`` usable complete trials are given.
        ``params`` / ``complete_params``: unit-cube configurations (used by ``model="gp"``)."""
        from scipy.stats import norm
        from scipy.stats import t as student_t

        dirs = check_directions(directions)
        d = len(dirs)
        logs = [bool(x) for x in (log_scale or [False] * d)]
        if len(logs) != d:
            raise ValueError(f"`log_scale` must have one entry per objective ({d}), got {list(log_scale)!r}.")
        v = self._space(np.asarray(values, dtype=float).reshape(1, -1), dirs, logs)
        use_gp = self.model == "gp" and params is not None and complete_params is not None
        if use_gp and len(complete_params) != len(complete):
            raise ValueError(
                f"`complete_params` must have one configuration per complete trial ({len(complete)}), "
                f"got {len(complete_params)}."
            )
        keep = [i for i, (p, f) in enumerate(complete) if len(p) == d and len(f) == d]
        if v.shape[1] != d or not np.all(np.isfinite(v)) or len(keep) < self.min_complete:
            return None
        X = self._space(np.array([complete[i][0] for i in keep], float), dirs, logs)
        Y = self._space(np.array([complete[i][1] for i in keep], float), dirs, logs)
        ok = np.all(np.isfinite(X), 1) & np.all(np.isfinite(Y), 1)
        X, Y = X[ok], Y[ok]
        if use_gp:
            U = np.array([complete_params[i] for i in keep], float)[ok]
            u0 = np.asarray(params, dtype=float).reshape(-1)
        n = len(X)
        if n < self.min_complete:
            return None
        upper = np.empty(d)
        k = max(self.min_complete, -(-n // 3))  # neighbours of the local spread
        for j in range(d):
            x, y, x0 = X[:, j], Y[:, j], v[0, j]
            xm, ym = x.mean(), y.mean()
            sxx = float(np.sum((x - xm) ** 2))
            if sxx <= 1e-12 * max(1.0, float(np.sum(x**2))):  # no spread in the partial values: no slope
                b, lev, dof = 0.0, 1 + 1 / n, n - 1
            else:
                b = float(np.sum((x - xm) * (y - ym)) / sxx)
                lev, dof = 1 + 1 / n + (x0 - xm) ** 2 / sxx, n - 2
            resid = y - ym - b * (x - xm)
            if self.spread == "local" and k < n:
                near = np.argsort(np.abs(x - x0), kind="stable")[:k]
                s2, dof = float(np.sum(resid[near] ** 2)) / (k - 1), k - 1
            else:
                s2 = float(np.sum(resid**2)) / dof
            pred = ym + b * (x0 - xm)
            if use_gp:  # the line plus a GP correction of its residuals over (configuration, partial value)
                m, sd = self._gp_residual(U, x, resid, u0, x0)
                upper[j] = pred + m + float(norm.ppf(self.quantile)) * sd
            else:
                upper[j] = pred + float(student_t.ppf(self.quantile, dof)) * np.sqrt(s2 * lev)
        return upper, Y

    def _gp_residual(
        self, U: np.ndarray, x: np.ndarray, resid: np.ndarray, u0: np.ndarray, x0: float
    ) -> tuple[float, float]:
        """Predictive mean and standard deviation (noise included) at ``(u0, x0)`` of a GP fitted to the
        line's residuals over the configurations ``U`` and partial values ``x`` (scaled to [0, 1] over the
        complete trials). Fits are cached on their data: the complete trials change only when one
        finishes, while every running trial asks at every step."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as C
        from threadpoolctl import threadpool_limits

        lo, span = float(x.min()), float(np.ptp(x)) or 1.0
        Z = np.column_stack([U, (x - lo) / span])
        key = (Z.tobytes(), resid.tobytes())
        gp = self._gp_cache.get(key)
        if gp is None:
            dim = Z.shape[1]
            kernel = C(1.0, (1e-3, 1e3)) * RBF(np.ones(dim), (1e-2, 1e2)) + WhiteKernel(1e-2, (1e-6, 1e1))
            gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=1, random_state=0)
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lengthscales at their bounds: an irrelevant input
                gp.fit(Z, resid)
            if len(self._gp_cache) >= 16:
                self._gp_cache.clear()
            self._gp_cache[key] = gp
        z0 = np.r_[u0, (x0 - lo) / span][None]
        with threadpool_limits(1):
            m, sd = gp.predict(z0, return_std=True)
        return float(m[0]), float(sd[0])

    def should_prune(
        self,
        step: int,
        values: Sequence[float],
        peers: Sequence[Sequence[float]],
        directions: Sequence[str],
        complete: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None,
        log_scale: Sequence[bool] | None = None,
        params: Sequence[float] | None = None,
        complete_params: Sequence[Sequence[float]] | None = None,
    ) -> bool:
        """Whether the trial with objective vector ``values`` at ``step`` stops. ``complete``: for every
        complete trial that reported ``step``, its (vector at ``step``, final vector); ``log_scale``: per
        objective, whether it is modelled on a log scale (the tuner passes its objectives'); ``params`` and
        ``complete_params``: the unit-cube configurations of the trial and of the complete trials (for
        ``model="gp"``). ``peers`` (other trials at the step) are not used by this rule. A non-finite
        ``values`` is never pruned."""
        if not self.is_rung(step) or complete is None:
            return False
        out = self.optimistic_final(values, complete, directions, log_scale, params, complete_params)
        if out is None:
            return False
        upper, Y = out
        front = Y[nondominated_mask(Y)]
        return bool(dominates(front, upper[None]).any())

    @staticmethod
    def _space(Y: np.ndarray, dirs: list[str], logs: list[bool]) -> np.ndarray:
        Y = log_columns(Y, [j for j, lg in enumerate(logs[: Y.shape[1]]) if lg])
        return to_max(Y, dirs) if Y.shape[1] == len(dirs) else Y


#: Pruner rules selectable by name in ``HyperTuner(pruner={"name": ..., ...})`` / the ``tune`` yaml.
PRUNERS = {"pareto_halving": ParetoHalvingPruner, "learning_curve": LearningCurvePruner}


def make_pruner(spec: Any) -> Any:
    """A pruner from ``None`` (no pruning), a pruner object (any object with ``is_rung`` and
    ``should_prune``), or a mapping ``{name: pareto_halving, <constructor arguments>}`` (``name`` defaults
    to ``pareto_halving``).

    Raises:
        ValueError: an unknown name or argument, or a bad value (named, with the allowed ones).

    Examples:
        >>> make_pruner({"reduction_factor": 2}).rungs(4)
        [1, 2, 4]
    """
    if spec is None or spec is False:
        return None
    if hasattr(spec, "should_prune") and hasattr(spec, "is_rung"):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(
            "`pruner` must be None, a mapping such as {name: pareto_halving, reduction_factor: 3} or an object "
            f"with is_rung() and should_prune(), got {spec!r}."
        )
    args = dict(spec)
    name = args.pop("name", "pareto_halving")
    if name not in PRUNERS:
        raise ValueError(f"`pruner.name` must be one of {sorted(PRUNERS)}, got {name!r}.")
    cls = PRUNERS[name]
    import inspect

    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(f"`pruner` has unknown argument(s) {unknown} for {name!r}; allowed: {allowed}.")
    return cls(**args)


def pruner_config(pruner: Any) -> dict[str, Any] | None:
    """What identifies a pruner in a study's fingerprint."""
    if pruner is None:
        return None
    if hasattr(pruner, "config"):
        return dict(pruner.config())
    return {"class": f"{type(pruner).__module__}.{type(pruner).__qualname__}"}
