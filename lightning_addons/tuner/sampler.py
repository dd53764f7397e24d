"""HyperTuner's suggestions as an Optuna sampler, so any number of workers share one Optuna study.

The study (SQLite, PostgreSQL, MySQL, ...) is the single source of truth: at each new trial the sampler
rebuilds its ask/tell optimiser from the study's finished trials, treats other workers' running trials
as pending points, indexes the initial design by the trial number (unique in the storage), and seeds the
model-based step with ``(seed, trial number)``. Workers sampling at the same instant cannot see each
other's parameters yet, and a model-based step can land both on the same point (a corner of the cube, an
integer bin), so each suggestion is also claimed in the storage (a trial system attribute) before the
other trials' claims and parameters are re-read, and redrawn when another trial claims or holds the
same one. Two workers
therefore never run the same suggestion, and a resumed study continues exactly where it stopped.
ADUMBO's fitted GP hyper-parameters are stored with each trial (a trial system attribute) and the next
suggestion's fit starts from the latest stored ones, so the warm start survives restarts and is shared by
the workers. A finished trial's user attribute ``objective_sem`` (one standard error per objective, ``None``
for an objective measured once) becomes the observation variance ``sem**2`` of the surrogate's fixed-noise
GP. This module imports Optuna: use it through
:class:`~lightning_addons.tuner.HyperTuner` or ``lightning_addons.tuner.HyperTunerSampler`` (lazy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from lightning_addons.tuner._pareto import log_columns
from lightning_addons.tuner.mopir import MOPIRResult, mopir
from lightning_addons.tuner.optimizers import make_optimizer
from lightning_addons.tuner.space import SearchSpace

MOPIR_ATTR = "hypertuner_mopir"
CLAIM_ATTR = "hypertuner_claim"
GP_WARM_ATTR = "hypertuner_gp_warm"
SEM_ATTR = "objective_sem"
STEP_PREFIX = "objectives@"  # a trial's objective vector at step k (written by HyperTuner's reporter)
PRUNED_TRIALS = ("pessimistic", "ignore")


class HyperTunerSampler(BaseSampler):
    """An Optuna sampler driven by a lightning-addons ask/tell optimiser (ADUMBO by default) with MOPIR.

    Args:
        space: the search space (its parameters are the study's parameters).
        directions: one direction per objective, as the study's.
        algorithm: ``adumbo``, ``adumbo_w1``, ``adumbo_w0``, ``random``, ``sobol`` or ``qnehvi``.
        seed: random seed.
        n_init: size of the initial design (trial 0 is the space defaults when ``include_defaults``).
        log_objectives: indices of objectives modelled on a log scale.
        mopir: ``None`` to disable, else a dict of :func:`~lightning_addons.tuner.mopir.mopir` options
            (``share``, ``k_min``, ``top_k``, ``method``, ``weights``) plus ``freeze``: ``"default"`` or
            ``"best"``. MOPIR runs once when ``n_init`` trials are complete; its result is stored in the
            study's user attributes (``hypertuner_mopir``) and shared by all workers.
        include_defaults: start the design with the defaults (Lightning's defaults for system knobs).
        optimizer_kwargs: further keyword arguments of the optimiser.
        objective_names: names used in the stored MOPIR ranking.
        pruned_trials: how ``PRUNED`` trials (early-stopped, with ``partial_values`` at step ``pruned_at``)
            reach the surrogate. ``"pessimistic"`` (default): as observations at a pessimistic full-run
            value: the log-scaled objectives (time, energy: costs that accrue per step) scaled by
            ``full_step / pruned_at``, the others at their partial value (for a metric that improves with
            training, a bound on what the full run would reach), where ``full_step`` is the last step the
            complete trials reported. The surrogate then knows the region was tried and judged behind,
            and a suggestion within ``MIN_DISTANCE`` of a pruned point is a duplicate. For an
            objective every complete trial repeated, their observation variance is the largest of the
            complete trials'. ``"ignore"``: they are left out (the sampler only sees complete and failed
            trials).

    Examples:
        >>> import optuna
        >>> space = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})
        >>> study = optuna.create_study(directions=["minimize"], sampler=HyperTunerSampler(space, ["minimize"]))
        >>> study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0) - 0.3) ** 2, n_trials=3)
        >>> len(study.trials)
        3
    """

    def __init__(
        self,
        space: SearchSpace,
        directions: Sequence[str],
        algorithm: str = "adumbo",
        seed: int = 0,
        n_init: int = 10,
        log_objectives: Sequence[int] = (),
        mopir: Mapping[str, Any] | None = None,
        include_defaults: bool = True,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        objective_names: Sequence[str] | None = None,
        pruned_trials: str = "pessimistic",
    ) -> None:
        if pruned_trials not in PRUNED_TRIALS:
            raise ValueError(f"`pruned_trials` must be one of {list(PRUNED_TRIALS)}, got {pruned_trials!r}.")
        self.pruned_trials = pruned_trials
        self.space = space
        self.objective_names = list(objective_names) if objective_names else None
        self.directions = list(directions)
        self.algorithm = algorithm
        self.seed = int(seed)
        self.n_init = int(n_init)
        self.log_objectives = list(log_objectives)
        self.mopir_options = None if mopir is None else dict(mopir)
        self.include_defaults = include_defaults
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self._fallback = RandomSampler(seed=seed)
        self._failures: dict[int, BaseException] = {}
        # validate the name and the options early (less those sized by the inputs MOPIR leaves active)
        early = {k: v for k, v in self.optimizer_kwargs.items() if k not in ("grid", "initial_points")}
        make_optimizer(algorithm, space.dim, self.directions, **early)
        self.last_weight: float | None = None
        self._warm: dict[str, Any] | None = None  # GP hyper-parameters stored with the latest trial
        self._fitted: dict[str, Any] | None = None  # those of this sampler's last fit

    # -- Optuna sampler API --------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self.space.optuna_distributions()

    def sample_independent(self, study, trial, param_name, param_distribution):
        failure = self._failures.pop(trial.number, None)
        if failure is not None:
            # sample_relative failed inside ``study.ask()``: raised here, where the tuner holds the trial
            # and can mark it failed (an exception inside ``ask`` would leave it RUNNING)
            raise RuntimeError(
                f"the {self.algorithm} sampler failed for trial {trial.number}: {type(failure).__name__}: "
                f"{failure}"
            ) from failure
        # a parameter outside the space (suggested by user code): random
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict[str, Any]:
        if not search_space or "fixed_params" in trial.system_attrs:
            return {}  # an enqueued trial (a lost trial run again) has its parameters
        try:
            return self._sample_relative(study, trial)
        except Exception as err:  # noqa: BLE001 - re-raised by sample_independent, see there
            self._failures[trial.number] = err
            return {}

    def _sample_relative(self, study, trial: FrozenTrial) -> dict[str, Any]:
        trials = study.get_trials(
            deepcopy=False,
            states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.PRUNED),
        )
        names = self.space.names
        done, failed, running, pruned = [], [], [], []
        for t in trials:
            if t.number == trial.number or not all(n in t.params for n in names):
                continue
            if t.state == TrialState.COMPLETE and t.values is not None:
                done.append(t)
            elif t.state == TrialState.PRUNED:
                pruned.append(t)
            elif t.state == TrialState.FAIL and not t.user_attrs.get("lost"):
                failed.append(t)  # a lost trial (its worker died) says nothing about its parameters
            elif t.state == TrialState.RUNNING:
                running.append(t)
        X_done = np.array([self.space.to_unit(t.params) for t in done]).reshape(-1, self.space.dim)
        Y_done = np.array([t.values for t in done], dtype=float).reshape(-1, len(self.directions))
        V_done = np.array([self._variances(t) for t in done], dtype=float).reshape(Y_done.shape)
        X_pr, Y_pr = self._pruned_observations(pruned, done)
        if len(X_pr):  # MOPIR below still ranks on the complete trials only
            X_all = np.vstack([X_done, X_pr])
            Y_all = np.vstack([Y_done, Y_pr])
            V_all = np.vstack([V_done, self._pruned_variances(V_done, len(Y_pr))])
        else:
            X_all, Y_all, V_all = X_done, Y_done, V_done
        warm_from = [t for t in trials if t.number < trial.number and GP_WARM_ATTR in t.system_attrs]
        self._warm = max(warm_from, key=lambda t: t.number).system_attrs[GP_WARM_ATTR] if warm_from else None
        X_fail = np.array([self.space.to_unit(t.params) for t in failed]).reshape(-1, self.space.dim)
        X_run = np.array([self.space.to_unit(t.params) for t in running]).reshape(-1, self.space.dim)

        ranking = self._mopir(study, X_done, Y_done, done)
        active = list(range(self.space.dim))
        fixed: dict[int, float] = {}
        if ranking is not None:
            active = [names.index(n) for n in ranking.selected]
            fixed = self._frozen_values(ranking, done)
        rejected: list[np.ndarray] = []
        for attempt in range(8):
            pend = np.vstack([X_run, *rejected]) if rejected else X_run
            u = self._ask(trial.number, attempt, active, fixed, X_all, Y_all, X_fail, pend, V_all)
            params = self.space.from_unit(u)
            # Claim-then-check, also against workers sampling at the same instant (their trials have no
            # params yet): each worker writes its claim to the storage *before* reading every other
            # trial's claim and params, so of two workers with the same suggestion at least one sees the
            # other's claim and redraws, with the claimed point as a pending one.
            if self._claim_is_unique(study, trial, self._key(params)):
                trial_id = getattr(trial, "_trial_id", None)
                if self._fitted is not None and trial_id is not None:
                    study._storage.set_trial_system_attr(trial_id, GP_WARM_ATTR, self._fitted)
                return params
            rejected.append(u[None])
        # eight collisions in a row: a uniform point seeded by the trial number (distinct per trial)
        u = np.random.default_rng([self.seed, int(trial.number)]).random(self.space.dim)
        for i, v in fixed.items():
            u[i] = v
        params = self.space.from_unit(u)
        self._claim_is_unique(study, trial, self._key(params))
        return params

    # -- internals ------------------------------------------------------------------------
    @staticmethod
    def _pruned_variances(V_done: np.ndarray, n: int) -> np.ndarray:
        """Observation variances of ``n`` pruned rows: per objective, the largest variance of the complete
        trials where every complete trial has one (so repeated objectives keep their fixed-noise model),
        else NaN (unknown)."""
        out = np.full((n, V_done.shape[1]), np.nan)
        for j in range(V_done.shape[1]):
            col = V_done[:, j]
            if len(col) and np.all(np.isfinite(col)):
                out[:, j] = np.max(col)
        return out

    def _pruned_observations(
        self, pruned: list[FrozenTrial], done: list[FrozenTrial]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y)`` of the pruned trials at their pessimistic full-run values (see ``pruned_trials``);
        empty when ignored, when no complete trial reported steps, or for malformed attributes."""
        m = len(self.directions)
        empty = np.zeros((0, self.space.dim)), np.zeros((0, m))
        if self.pruned_trials == "ignore" or not pruned:
            return empty
        steps = [
            int(k[len(STEP_PREFIX) :])
            for t in done
            for k in t.user_attrs
            if k.startswith(STEP_PREFIX) and k[len(STEP_PREFIX) :].isdigit()
        ]
        if not steps:
            return empty
        full = max(steps)
        X, Y = [], []
        for t in pruned:
            vals, at = t.user_attrs.get("partial_values"), t.user_attrs.get("pruned_at")
            try:
                v = np.asarray(vals, dtype=float).reshape(-1)
                at = int(at)
            except (TypeError, ValueError):
                continue
            if len(v) != m or not np.all(np.isfinite(v)) or not 0 < at < full:
                continue
            for j in self.log_objectives:
                v[j] *= full / at
            X.append(self.space.to_unit(t.params))
            Y.append(v)
        if not X:
            return empty
        return np.asarray(X), np.asarray(Y)

    def _variances(self, t: FrozenTrial) -> list[float]:
        """``objective_sem ** 2`` per objective (NaN where absent, ``None`` or malformed)."""
        sem = t.user_attrs.get(SEM_ATTR)
        m = len(self.directions)
        if not isinstance(sem, (list, tuple)) or len(sem) != m:
            return [float("nan")] * m
        out = []
        for v in sem:
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = float("nan")
            out.append(v * v if np.isfinite(v) and v >= 0 else float("nan"))
        return out

    @staticmethod
    def _key(params: Mapping[str, Any]) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    @classmethod
    def _claim_is_unique(cls, study, trial: FrozenTrial, key: tuple) -> bool:
        """Write this trial's claim, then re-read every other trial (any state) and check that none claims
        or holds the same parameters. Re-reading all states matters: a suggestion takes ~1 s, in which a
        trial that had no parameters when this one started sampling can be claimed, run and finished."""
        claim = repr(key)
        trial_id = getattr(trial, "_trial_id", None)
        if trial_id is None:  # pragma: no cover - every storage-backed trial has one
            return True
        study._storage.set_trial_system_attr(trial_id, CLAIM_ATTR, claim)
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number:
                continue
            if t.system_attrs.get(CLAIM_ATTR) == claim or (t.params and cls._key(t.params) == key):
                return False
        return True

    def _ask(self, number, attempt, active, fixed, X_done, Y_done, X_fail, X_run, V_done=None) -> np.ndarray:
        kw = dict(self.optimizer_kwargs)
        if self.algorithm.startswith("adumbo") or self.algorithm == "qnehvi":
            kw.setdefault("n_init", self.n_init)
        if self.algorithm.startswith("adumbo") and self.include_defaults:
            kw.setdefault("initial_points", self.space.to_unit(self.space.defaults())[None, active])
        if self.algorithm.startswith("adumbo"):
            grid = self.space.unit_grid()
            kw.setdefault("grid", [grid[i] for i in active])
        opt = make_optimizer(
            self.algorithm,
            len(active),
            self.directions,
            seed=self.seed + 7919 * attempt,
            log_objectives=self.log_objectives,
            **kw,
        )
        if hasattr(opt, "_gp_warm"):
            opt._gp_warm = getattr(self, "_warm", None)
        if len(X_done):
            opt.tell(X_done[:, active], Y_done, V_done)
            # failures are only modelled next to successes (imputed worse than the worst): with no
            # success the optimiser stays in its initial design instead of fitting a model to nothing
            if len(X_fail):
                opt.tell(X_fail[:, active], np.full((len(X_fail), len(self.directions)), np.nan))
        # the design is indexed by the trial number: distinct across workers sharing the storage
        opt.n_asked = int(number)
        x = opt.ask(1, pending=X_run[:, active] if len(X_run) else None)[0]
        self.last_weight = getattr(opt, "last_weight", None)
        self._fitted = getattr(opt, "_gp_warm", None)
        u = np.empty(self.space.dim)
        u[active] = x
        for i, v in fixed.items():
            u[i] = v
        return u

    def _mopir(self, study, X, Y, done) -> MOPIRResult | None:
        if self.mopir_options is None:
            return None
        stored = study.user_attrs.get(MOPIR_ATTR)
        if stored:
            return MOPIRResult.from_dict(stored)
        if len(X) < max(self.n_init, 3):
            return None
        opts = {k: v for k, v in self.mopir_options.items() if k != "freeze"}
        Yt = log_columns(Y, self.log_objectives, floor=1e-12)
        try:
            ranking = mopir(X, Yt, self.space.names, self.objective_names, seed=self.seed, **opts)
        except ValueError:
            return None
        study.set_user_attr(MOPIR_ATTR, ranking.to_dict())
        return ranking

    def _frozen_values(self, ranking: MOPIRResult, done: list[FrozenTrial]) -> dict[int, float]:
        names = self.space.names
        freeze = (self.mopir_options or {}).get("freeze", "default")
        source = self.space.defaults()
        if freeze == "best" and done:
            # the finished trial best on the first objective
            sign = 1.0 if self.directions[0] == "maximize" else -1.0
            best = max(done, key=lambda t: sign * t.values[0])
            source = {n: best.params[n] for n in names}
        return {
            names.index(n): float(self.space[n].to_unit(source[n]))
            for n in names
            if n not in ranking.selected
        }


def optuna_sampler(name: str, seed: int = 0, n_init: int = 10, population_size: int | None = None):
    """Optuna's own samplers by name: ``tpe``, ``nsga2``, ``gp`` (GPSampler), ``optuna_random``.

    Raises:
        ValueError: unknown name.
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_init)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size or max(4, n_init))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_init)
    if name == "optuna_random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown Optuna sampler {name!r}; choose from ['tpe', 'nsga2', 'gp', 'optuna_random'].")
