"""Ask/tell multi-objective optimisers on the unit cube: ADUMBO and its baselines.

Every optimiser works on points in ``[0, 1]^dim`` (a :class:`~lightning_addons.tuner.SearchSpace` maps
them to configurations), takes objective values in their natural units with a direction each, and is

* seedable: the same seed and the same observations give the same suggestions;
* serialisable: :meth:`AskTellOptimizer.state_dict` holds plain lists and numbers (JSON-safe) and
  :meth:`AskTellOptimizer.load_state_dict` restores it; surrogates are refitted from the data.

ADUMBO (reconstruction, see ``docs/hypertuner.md``): after a Sobol initial design it fits one
independent GP per objective (inputs in [0, 1], outputs standardised, chosen objectives log-transformed),
builds a candidate set from the non-dominated points of the optimistic acquisitions
``mu_i + sqrt(beta) sigma_i`` and of the surrogate means ``mu_i``: by default (``candidates="nsga2"``)
the Pareto points of a Sobol pool plus perturbations of the current front seed two NSGA-II runs on the
surrogates (one on the optimistic acquisitions, as USeMO does, one on the means; a small NumPy NSGA-II in
:mod:`lightning_addons.tuner._nsga2`), and the candidates are the union of the pool's Pareto points and the
two runs' archive fronts (``candidates="pool"`` keeps only the pool, the previous default). It then picks
the candidate maximising ``S_t = w_t U + (1 - w_t) G`` with ``U = sum_i log(2 sqrt(beta) sigma_i)`` (the
uncertainty volume of USeMO) and ``G`` the hypervolume improvement of the mean vector over the observed
front (a dominated mean gets minus its additive-epsilon distance to the front). ``G``'s reference point
is inferred as BoTorch does (the front's nadir minus 10% of its range), but over the epsilon-Pareto front
(``ref_eps=0.05``: front points that another front point beats by more than 5% of the range in one
objective while losing at most 5% in all others are left out), so weakly Pareto edge points do not drag
the reference point outwards with every evaluation. ``U`` and ``G`` are min-max normalised over the
candidates; ``w_t = w0 exp(-t / tau)`` decays with the number of model-based steps ``t``. ``weight=1``
is USeMO, ``weight=0`` is mean-only.

The BoTorch/GPyTorch imports happen inside the methods, so importing this module needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_addons._imports import require
from lightning_addons.tuner._pareto import check_directions, hypervolume, log_columns, pareto_mask, to_max

ALGORITHMS = ("adumbo", "random", "sobol", "qnehvi")
BATCH_RULES = ("fantasies", "lower_bound")


def _check_batch_rule(rule: str) -> str:
    if rule not in BATCH_RULES:
        raise ValueError(f"`batch_rule` must be one of {list(BATCH_RULES)}, got {rule!r}.")
    return rule


def _sobol(n: int, dim: int, seed: int, skip: int = 0) -> np.ndarray:
    import warnings

    from scipy.stats import qmc  # scipy ships with scikit-learn

    eng = qmc.Sobol(d=dim, scramble=True, seed=seed)
    if skip:
        eng.fast_forward(skip)
    with warnings.catch_warnings():  # balance properties need powers of two; we take prefixes
        warnings.simplefilter("ignore")
        return eng.random(n)


class AskTellOptimizer:
    """Base class: stores observations; subclasses implement :meth:`_suggest`.

    Args:
        dim: number of (unit-cube) input dimensions.
        directions: one of ``"minimize"``/``"maximize"`` per objective.
        seed: random seed.
        log_objectives: indices of objectives to model on a log scale (time, energy; must be > 0).

    Raises:
        ValueError: ``dim < 1``, bad directions, out-of-range log indices, or a told point of the wrong shape.
    """

    name = "base"

    def __init__(
        self,
        dim: int,
        directions: Sequence[str],
        seed: int = 0,
        log_objectives: Sequence[int] = (),
    ) -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"`dim` must be an integer >= 1, got {dim!r}.")
        self.dim = int(dim)
        self.directions = check_directions(directions)
        self.n_objectives = len(self.directions)
        bad = [i for i in log_objectives if not 0 <= int(i) < self.n_objectives]
        if bad:
            raise ValueError(
                f"`log_objectives` must hold indices in [0, {self.n_objectives - 1}], got {list(log_objectives)}."
            )
        self.log_objectives = [int(i) for i in log_objectives]
        self.seed = int(seed)
        self.X = np.zeros((0, self.dim))
        self.Y = np.zeros((0, self.n_objectives))
        self.Yvar = np.zeros((0, self.n_objectives))
        self.n_asked = 0

    # ---------------------------------------------------------------- public API
    def ask(self, n: int = 1, pending: np.ndarray | None = None) -> np.ndarray:
        """Suggest ``n`` points in ``[0, 1]^dim`` (shape ``(n, dim)``), avoiding ``pending`` ones."""
        if n < 1:
            raise ValueError(f"`n` must be >= 1, got {n!r}.")
        pend = np.zeros((0, self.dim)) if pending is None else np.atleast_2d(np.asarray(pending, float))
        if pend.size and pend.shape[1] != self.dim:
            raise ValueError(f"`pending` must have {self.dim} columns, got shape {pend.shape}.")
        X = np.clip(self._suggest(n, pend), 0.0, 1.0)
        self.n_asked += n
        return X

    def tell(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None = None) -> None:
        """Record observations; rows of ``Y`` holding NaN/inf mark failed evaluations.

        ``Yvar`` (optional, same shape as ``Y``, in the objectives' own units squared): the variance of each
        observed value, e.g. the squared standard error of the mean of repeated measurements; NaN where
        unknown. ADUMBO models an objective with this fixed (heteroscedastic) noise when every observation
        of it carries a variance, and infers a homoskedastic noise otherwise.
        """
        X = np.atleast_2d(np.asarray(X, dtype=float))
        Y = np.atleast_2d(np.asarray(Y, dtype=float))
        if X.shape[1] != self.dim:
            raise ValueError(f"`X` must have {self.dim} columns, got shape {X.shape}.")
        if Y.shape != (len(X), self.n_objectives):
            raise ValueError(f"`Y` must have shape ({len(X)}, {self.n_objectives}), got {Y.shape}.")
        if Yvar is None:
            V = np.full(Y.shape, np.nan)
        else:
            V = np.atleast_2d(np.asarray(Yvar, dtype=float))
            if V.shape != Y.shape:
                raise ValueError(f"`Yvar` must have the shape of `Y` {Y.shape}, got {V.shape}.")
            if np.any(V[np.isfinite(V)] < 0):
                raise ValueError(f"`Yvar` must hold variances >= 0 (or NaN where unknown), got {V.tolist()}.")
        self.X = np.vstack([self.X, X])
        self.Y = np.vstack([self.Y, Y])
        self.Yvar = np.vstack([self.Yvar, V])

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "directions": list(self.directions),
            "seed": self.seed,
            "log_objectives": list(self.log_objectives),
            "X": self.X.tolist(),
            "Y": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.Y],
            "Yvar": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.Yvar],
            "n_asked": self.n_asked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("dim") != self.dim or list(state.get("directions", [])) != self.directions:
            raise ValueError(
                f"state is for dim={state.get('dim')}, directions={state.get('directions')}; this optimiser has "
                f"dim={self.dim}, directions={self.directions}."
            )
        self.X = np.asarray(state["X"], dtype=float).reshape(-1, self.dim)
        self.Y = np.asarray([[np.nan if v is None else v for v in r] for r in state["Y"]], float).reshape(
            -1, self.n_objectives
        )
        if state.get("Yvar") is not None:
            self.Yvar = np.asarray(
                [[np.nan if v is None else v for v in r] for r in state["Yvar"]], float
            ).reshape(-1, self.n_objectives)
        else:  # a state written before observation variances existed
            self.Yvar = np.full(self.Y.shape, np.nan)
        self.n_asked = int(state["n_asked"])
        self.seed = int(state["seed"])

    # ---------------------------------------------------------------- helpers
    @property
    def n_observed(self) -> int:
        return len(self.X)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.n_asked])

    def _model_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) for surrogate fitting: maximisation convention, logs taken, failed rows imputed worst."""
        Y = to_max(log_columns(self.Y, self.log_objectives), self.directions)
        ok = np.all(np.isfinite(Y), axis=1)
        if ok.sum() == 0:
            return self.X[:0], Y[:0]
        worst = np.nanmin(np.where(np.isfinite(Y), Y, np.nan)[ok], axis=0)
        spread = np.nanmax(Y[ok], axis=0) - worst
        Y[~ok] = worst - 0.1 * np.where(spread > 0, spread, 1.0)
        return self.X, Y

    def _standardised_targets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Ys, mean, std)``: the model targets standardised per objective (``std`` 0 -> 1)."""
        X, Ymax = self._model_targets()
        mean, std = Ymax.mean(0), Ymax.std(0)
        std = np.where(std > 0, std, 1.0)
        return X, (Ymax - mean) / std, mean, std

    def _standardised_variances(self, std: np.ndarray) -> np.ndarray | None:
        """Observation variances in the standardised model space, or None when no objective has them all.

        A log-modelled objective takes the delta-method variance ``var / y^2``; failed rows (imputed
        worst) take the largest variance of their column. A column is NaN unless every finite observation
        of it carries a variance (such a column keeps the inferred homoskedastic noise).
        """
        if not len(self.Y) or not np.isfinite(self.Yvar).any():
            return None
        V = self.Yvar.copy()
        for j in self.log_objectives:
            with np.errstate(divide="ignore", invalid="ignore"):
                V[:, j] = V[:, j] / self.Y[:, j] ** 2
        V = V / std**2
        ok = np.all(np.isfinite(self.Y), axis=1)
        out = np.full(V.shape, np.nan)
        for j in range(self.n_objectives):
            col = V[:, j]
            if ok.any() and np.all(np.isfinite(col[ok])):
                out[:, j] = np.where(ok, col, np.max(col[ok]))
        if not np.isfinite(out).any():
            return None
        return np.maximum(out, 1e-6)  # a zero variance would make the kernel matrix singular

    def _user_ref_point(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray | None:
        """The user's ``ref_point`` in the standardised maximisation space of the targets (None if unset)."""
        if self.ref_point is None:
            return None
        ref = log_columns(np.array(self.ref_point, dtype=float), self.log_objectives, floor=1e-300)
        return (to_max(ref[None], self.directions)[0] - mean) / std

    def _suggest(self, n: int, pending: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomSearch(AskTellOptimizer):
    """Uniform random search (baseline).

    Examples:
        >>> opt = RandomSearch(2, ["minimize", "minimize"], seed=0)
        >>> opt.ask(3).shape
        (3, 2)
    """

    name = "random"

    def _suggest(self, n, pending):
        return self._rng().random((n, self.dim))


class SobolSearch(AskTellOptimizer):
    """Scrambled Sobol sequence (baseline); point ``k`` of the study is point ``k`` of the sequence.

    Examples:
        >>> SobolSearch(2, ["minimize"], seed=0).ask(4).shape
        (4, 2)
    """

    name = "sobol"

    def _suggest(self, n, pending):
        return _sobol(n, self.dim, self.seed, skip=self.n_asked)


class ADUMBO(AskTellOptimizer):
    """ADUMBO: adaptive mean/uncertainty multi-objective Bayesian optimisation (reconstruction).

    Args:
        dim: number of inputs (points live in ``[0, 1]^dim``).
        directions: ``"minimize"``/``"maximize"`` per objective.
        seed: random seed (Sobol design, candidate pools, GP fitting).
        n_init: points of the initial Sobol design before the surrogates are used.
        weight: ``"adaptive"`` for ``w_t = w0 exp(-t / tau)``, or a constant in [0, 1]
            (``1.0`` = USeMO's uncertainty-only choice, ``0.0`` = mean hypervolume improvement only).
        w0: initial weight of the uncertainty term for ``weight="adaptive"``.
        tau: decay constant (in model-based steps) of the adaptive weight.
        beta: exploration factor of the optimistic acquisitions ``mu + sqrt(beta) sigma``.
        pool_size: Sobol pool size for the candidate set (plus ``perturbations`` per front point).
        perturbations: Gaussian perturbations of each current Pareto point added to the pool.
        candidates: ``"nsga2"`` (default): the pool's Pareto points seed NSGA-II runs on the optimistic
            acquisitions and on the means, whose archive fronts join the candidate set; ``"pool"``: the
            pool's Pareto points only (cheaper, weaker in higher dimension).
        nsga2_pop, nsga2_gens: population size and generations of each NSGA-II run.
        ref_eps: epsilon of the epsilon-Pareto front whose nadir anchors the inferred reference point
            (``0`` = BoTorch's ``infer_reference_point`` on the whole front).
        log_objectives: indices of objectives (> 0) modelled on a log scale.
        ref_point: optional reference point in the objectives' own units for ``G``; default: inferred
            each step as BoTorch's ``infer_reference_point`` does: the nadir of the observed Pareto
            front minus 10% of the front's range per objective.
        initial_points: optional unit-cube points evaluated first (e.g. the defaults).
        warm_start: start each surrogate fit at the previous step's hyper-parameters (kept in
            :meth:`state_dict`) instead of the prior's defaults: about 20% cheaper steps, but the fit can
            stay in a poor local optimum (DTLZ2, seed 0: HV/max 0.22 warm vs 0.40 cold), so off by default.
        grid: optional, one entry per input: ``None`` for a continuous input, or the sorted unit-cube
            values a discrete input can take (a categorical's bin centres, an integer's values). Candidates
            are rounded to these values before the surrogates see them (the rounding transformation of
            Garrido-Merchan and Hernandez-Lobato, 2020), so the acquisition is constant within a bin: a
            point in the bin of an observed category is not scored as new ground, and a candidate that
            rounds onto an observed point is a duplicate (see ``MIN_DISTANCE``).
        n_fantasies: joint posterior samples of the outcomes of pending points (and of the points chosen
            earlier in a batch) over which ``G`` is averaged (see :meth:`ask` with ``n > 1``/``pending``);
            unused by single suggestions with nothing pending.
        batch_rule: how ``G`` scores a candidate while points are pending (other workers' points, or
            the points picked earlier in a batch); a single suggestion with nothing pending never uses it.
            ``"fantasies"`` (default): the mean over ``n_fantasies`` joint posterior samples of the unseen
            outcomes of the hypervolume improvement of the candidate's posterior mean given each sample.
            ``"lower_bound"``: the same, with each candidate at its pessimistic bound ``mean - sqrt(beta)
            sigma`` (per objective, better-is-larger; ``sigma`` given the unseen points) instead of its
            mean, so a batch spends its picks after the first where the surrogates are sure rather than on
            optimistic bets that no fit corrects before the batch ends. On DTLZ2 (33 seeds) it lost less
            hypervolume to batches than ``"fantasies"``; on BraninCurrin and ZDT1 slightly more (see the
            guide's batch section).

    Raises:
        ValueError: bad weight/w0/tau/beta/n_init/candidates/ref_eps or any argument of
            :class:`AskTellOptimizer`.

    Examples:
        >>> import numpy as np
        >>> opt = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=0)
        >>> for _ in range(5):
        ...     x = opt.ask()
        ...     opt.tell(x, np.stack([x.sum(1), (1 - x).sum(1)], 1))
        >>> opt.n_observed
        5
    """

    name = "adumbo"

    def __init__(
        self,
        dim: int,
        directions: Sequence[str],
        seed: int = 0,
        n_init: int = 10,
        weight: str | float = "adaptive",
        w0: float = 0.5,
        tau: float = 5.0,
        beta: float = 4.0,
        pool_size: int = 1024,
        perturbations: int = 32,
        candidates: str = "nsga2",
        nsga2_pop: int = 48,
        nsga2_gens: int = 30,
        ref_eps: float = 0.05,
        log_objectives: Sequence[int] = (),
        ref_point: Sequence[float] | None = None,
        initial_points: np.ndarray | None = None,
        warm_start: bool = False,
        grid: Sequence[Sequence[float] | None] | None = None,
        n_fantasies: int = 32,
        batch_rule: str = "fantasies",
    ) -> None:
        super().__init__(dim, directions, seed=seed, log_objectives=log_objectives)
        self.batch_rule = _check_batch_rule(batch_rule)
        self.warm_start = bool(warm_start)
        self.grid = _check_grid(grid, self.dim)
        if not isinstance(n_fantasies, (int, np.integer)) or n_fantasies < 1:
            raise ValueError(f"`n_fantasies` must be an integer >= 1, got {n_fantasies!r}.")
        if weight != "adaptive":
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise ValueError(
                    f"`weight` must be 'adaptive' or a number in [0, 1], got {weight!r}."
                ) from None
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"`weight` must be 'adaptive' or a number in [0, 1], got {weight!r}.")
        if not 0.0 <= w0 <= 1.0:
            raise ValueError(f"`w0` must be in [0, 1], got {w0!r}.")
        if not tau > 0:
            raise ValueError(f"`tau` must be > 0, got {tau!r}.")
        if not beta > 0:
            raise ValueError(f"`beta` must be > 0, got {beta!r}.")
        if not isinstance(n_init, (int, np.integer)) or n_init < 1:
            raise ValueError(f"`n_init` must be an integer >= 1, got {n_init!r}.")
        if ref_point is not None and len(ref_point) != self.n_objectives:
            raise ValueError(f"`ref_point` must have {self.n_objectives} values, got {list(ref_point)}.")
        self.n_init = int(n_init)
        self.weight = weight
        self.w0, self.tau, self.beta = float(w0), float(tau), float(beta)
        self.pool_size, self.perturbations = int(pool_size), int(perturbations)
        if candidates not in ("nsga2", "pool"):
            raise ValueError(f"`candidates` must be one of ['nsga2', 'pool'], got {candidates!r}.")
        self.candidates = candidates
        if not isinstance(nsga2_pop, (int, np.integer)) or nsga2_pop < 4:
            raise ValueError(f"`nsga2_pop` must be an integer >= 4, got {nsga2_pop!r}.")
        if not isinstance(nsga2_gens, (int, np.integer)) or nsga2_gens < 0:
            raise ValueError(f"`nsga2_gens` must be an integer >= 0, got {nsga2_gens!r}.")
        self.nsga2_pop, self.nsga2_gens = int(nsga2_pop), int(nsga2_gens)
        if not 0.0 <= ref_eps < 1.0:
            raise ValueError(f"`ref_eps` must be in [0, 1), got {ref_eps!r}.")
        self.ref_eps = float(ref_eps)
        self.ref_point = None if ref_point is None else [float(v) for v in ref_point]
        self.initial_points = (
            np.zeros((0, dim)) if initial_points is None else np.atleast_2d(np.asarray(initial_points, float))
        )
        self.n_fantasies = int(n_fantasies)
        self.last_weight: float | None = None
        # hyper-parameters of the last surrogate fit (JSON-safe): the next fit starts from them
        self._gp_warm: dict[str, Any] | None = None

    def current_weight(self) -> float:
        """``w_t`` for the next model-based step."""
        if self.weight != "adaptive":
            return float(self.weight)
        t = max(0, self.n_observed - self.n_init)
        return self.w0 * math.exp(-t / self.tau)

    def _design(self, n: int) -> np.ndarray:
        out = []
        for k in range(self.n_asked, self.n_asked + n):
            if k < len(self.initial_points):
                out.append(self.initial_points[k])
            else:
                out.append(_sobol(1, self.dim, self.seed, skip=k - len(self.initial_points))[0])
        return np.asarray(out)

    def _suggest(self, n, pending):
        n_done = self.n_observed + len(pending)
        if n_done < self.n_init or self.n_observed < 2:
            return self._design(n)
        return self._bo_step(n, pending)

    # ------------------------------------------------------------------ BO step
    def _fit(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None = None) -> _Posterior:
        """Fit the surrogates (warm-started from the previous fit when it matches) and return their
        posterior; the fitted hyper-parameters are kept for the next step (and in :meth:`state_dict`)."""
        models, warm = fit_gps(
            X,
            Y,
            seed=self.seed + self.n_asked,
            Yvar=Yvar,
            warm_start=self._gp_warm if self.warm_start else None,
            feature="ADUMBO",
        )
        self._gp_warm = warm
        return _Posterior.from_models(models, X)

    @staticmethod
    def _predict(post: _Posterior, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return post.predict(Xc)

    def _condition(self, post: _Posterior, X, Y, Xp) -> _Posterior:
        """Kriging believer: the same hyper-parameters with the pending points added at their predicted means."""
        if len(Xp) == 0:
            return post
        return post.condition(Xp, post.predict(Xp)[0])

    def _pool(self, rng: np.random.Generator, front_X: np.ndarray) -> np.ndarray:
        pool = [_sobol(self.pool_size, self.dim, int(rng.integers(2**31)))]
        if len(front_X) and self.perturbations:
            scales = np.array([0.01, 0.03, 0.1, 0.2])
            reps = np.repeat(front_X, self.perturbations, axis=0)
            sd = rng.choice(scales, size=(len(reps), 1))
            # perturb a random subset of coordinates (all of them in low dimension)
            mask = rng.random(reps.shape) < max(0.5, 2.0 / self.dim)
            pool.append(np.clip(reps + mask * sd * rng.standard_normal(reps.shape), 0.0, 1.0))
        return self._snap(np.vstack(pool))

    def _snap(self, X: np.ndarray) -> np.ndarray:
        """Round the discrete inputs of ``X`` to their nearest allowed value (a copy; no-op without grid)."""
        return snap_to_grid(X, self.grid)

    def _candidates(self, models, rng: np.random.Generator, front_X: np.ndarray) -> np.ndarray:
        """Candidate inputs: non-dominated points of the optimistic acquisitions and of the means.

        ``"pool"``: a Sobol pool plus perturbations of the front, filtered to the Pareto points of
        ``mu + sqrt(beta) sigma`` and of ``mu``. ``"nsga2"``: the same filtered pool seeds two NSGA-II
        runs on the surrogates (one maximising the optimistic acquisitions, as USeMO does, one the
        means); the candidates are the union of the pool's Pareto points and the two archives' fronts.
        """
        sqb = math.sqrt(self.beta)
        pool = self._pool(rng, front_X)
        mu, sd = self._predict(models, pool)
        keep = pareto_mask(mu + sqb * sd) | pareto_mask(mu)
        cands = [pool[keep]]
        if self.candidates == "nsga2":
            from lightning_addons.tuner._nsga2 import nsga2

            def ucb(x):
                m, s = self._predict(models, self._snap(x))
                return m + sqb * s

            def mean(x):
                return self._predict(models, self._snap(x))[0]

            init = np.vstack([front_X, pool[keep]])
            for fun in (ucb, mean):
                order = rng.permutation(len(init))[: self.nsga2_pop]
                Xn, _ = nsga2(
                    fun, self.dim, rng, pop_size=self.nsga2_pop, n_gen=self.nsga2_gens, init=init[order]
                )
                cands.append(self._snap(Xn))
        return np.vstack(cands)

    def _bo_step(self, n: int, pending: np.ndarray) -> np.ndarray:
        rng = self._rng()
        X, Ys, mean, std = self._standardised_targets()
        base = self._fit(X, Ys, self._standardised_variances(std))
        models = self._condition(base, X, Ys, pending)
        front = Ys[pareto_mask(Ys)]
        ref = self._user_ref_point(mean, std)
        if ref is None:
            ref = _infer_ref_point(front, eps=self.ref_eps)
        pool = self._candidates(models, rng, X[pareto_mask(Ys)])
        mu, sd = self._predict(models, pool)
        chosen: list[np.ndarray] = []
        w = self.current_weight()
        self.last_weight = w
        sqb = math.sqrt(self.beta)
        for _ in range(n):
            ucb = mu + sqb * sd
            # Pareto candidates of the optimistic acquisitions (USeMO) and of the surrogate means
            cand = np.flatnonzero(pareto_mask(ucb) | pareto_mask(mu))
            # drop candidates within MIN_DISTANCE of observed / pending / chosen points
            taken = np.vstack([X, pending] + ([np.asarray(chosen)] if chosen else []))
            far = _normalised_distance(pool, taken) >= MIN_DISTANCE
            if not far[cand].any():  # every Pareto candidate is taken: the rest of the pool, else uniform
                cand = np.flatnonzero(far)
                if not len(cand):
                    pool = np.vstack([pool, self._snap(rng.random((1, self.dim)))])
                    mu, sd = self._predict(models, pool)
                    ucb = mu + sqb * sd
                    cand = np.array([len(pool) - 1])
            else:
                cand = cand[far[cand]]
            U = np.log(2 * sqb * sd[cand]).sum(1)
            unseen = np.vstack([pending] + ([np.asarray(chosen)] if chosen else []))
            if len(unseen) and self.batch_rule == "fantasies":  # G in expectation over the unseen outcomes
                G = self._fantasy_improvement(base, pool[cand], unseen, front, ref, rng)
            elif len(unseen):  # "lower_bound": each candidate at mean - sqrt(beta) sigma in each fantasy
                G = self._fantasy_improvement(base, pool[cand], unseen, front, ref, rng, sqb * sd[cand])
            else:
                G = _hv_improvement(mu[cand], front, ref)
            S = w * _minmax(U) + (1 - w) * _minmax(G)
            best = cand[int(np.argmax(S))]
            chosen.append(pool[best])
            if len(chosen) < n:  # kriging believer: shrink the uncertainty near the chosen points (diversity)
                models = self._condition(base, X, Ys, np.vstack([pending, np.asarray(chosen)]))
                mu, sd = self._predict(models, pool)
        return np.asarray(chosen)

    def _fantasy_improvement(
        self,
        post: _Posterior,
        Xc: np.ndarray,
        unseen: np.ndarray,
        front: np.ndarray,
        ref: np.ndarray,
        rng: np.random.Generator,
        margin: np.ndarray | None = None,
    ) -> np.ndarray:
        """``G`` of candidates ``Xc`` while the points ``unseen`` (pending, or chosen earlier in this batch)
        await their outcomes: the mean, over ``n_fantasies`` joint posterior samples of those outcomes, of
        the hypervolume improvement of each candidate's posterior mean given the sample over the observed
        front plus the sample. This is the expectation of the ``G`` that the sequential rule would compute
        once the unseen points were observed; a candidate whose outcome is correlated with an unseen
        point's gains little, as both move together. (The kriging believer evaluates ``G`` at the one
        fantasy at the mean, which leaves every candidate's mean where it was.)"""
        Yp, Mc = post.fantasy_means(Xc, unseen, self.n_fantasies, rng)
        if margin is not None:  # batch_rule="lower_bound": each candidate at its pessimistic bound
            Mc = Mc - margin
        hvi = _hv_improvement_2d if front.shape[1] == 2 else _hv_improvement
        G = np.zeros(len(Xc))
        for s in range(self.n_fantasies):
            F = np.vstack([front, Yp[s]])
            G += hvi(Mc[s], F[pareto_mask(F)], ref)
        return G / self.n_fantasies

    def state_dict(self) -> dict[str, Any]:
        s = super().state_dict()
        s.update(
            n_init=self.n_init,
            weight=self.weight,
            w0=self.w0,
            tau=self.tau,
            beta=self.beta,
            candidates=self.candidates,
            nsga2_pop=self.nsga2_pop,
            nsga2_gens=self.nsga2_gens,
            ref_eps=self.ref_eps,
            initial_points=self.initial_points.tolist(),
            gp_warm_start=self._gp_warm,
            warm_start=self.warm_start,
            grid=None if self.grid is None else [None if g is None else g.tolist() for g in self.grid],
            n_fantasies=self.n_fantasies,
            batch_rule=self.batch_rule,
        )
        return s

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.n_init = int(state.get("n_init", self.n_init))
        self.weight = state.get("weight", self.weight)
        self.w0 = float(state.get("w0", self.w0))
        self.tau = float(state.get("tau", self.tau))
        self.beta = float(state.get("beta", self.beta))
        self.candidates = state.get("candidates", self.candidates)
        self.nsga2_pop = int(state.get("nsga2_pop", self.nsga2_pop))
        self.nsga2_gens = int(state.get("nsga2_gens", self.nsga2_gens))
        self.ref_eps = float(state.get("ref_eps", self.ref_eps))
        if state.get("initial_points"):
            self.initial_points = np.asarray(state["initial_points"], dtype=float).reshape(-1, self.dim)
        self._gp_warm = state.get("gp_warm_start")
        self.warm_start = bool(state.get("warm_start", self.warm_start))
        self.n_fantasies = int(state.get("n_fantasies", self.n_fantasies))
        self.batch_rule = _check_batch_rule(state.get("batch_rule", self.batch_rule))
        if "grid" in state:
            self.grid = _check_grid(state["grid"], self.dim)


def _check_grid(grid, dim: int) -> list[np.ndarray | None] | None:
    """Validate ADUMBO's ``grid`` (None, or one ``None`` / list of values in [0, 1] per input)."""
    if grid is None:
        return None
    grid = list(grid)
    if len(grid) != dim:
        raise ValueError(f"`grid` must have one entry per input ({dim}), got {len(grid)} entries.")
    out: list[np.ndarray | None] = []
    for i, g in enumerate(grid):
        if g is None:
            out.append(None)
            continue
        v = np.sort(np.asarray(g, dtype=float).reshape(-1))
        if not len(v) or not np.all(np.isfinite(v)) or v[0] < 0.0 or v[-1] > 1.0:
            raise ValueError(
                f"`grid[{i}]` must be None or a non-empty list of values in [0, 1], got {list(np.ravel(g))!r}."
            )
        out.append(v)
    return out if any(g is not None for g in out) else None


def snap_to_grid(X: np.ndarray, grid: Sequence[np.ndarray | None] | None) -> np.ndarray:
    """``X`` (rows of unit-cube points) with each discrete column rounded to its nearest ``grid`` value.

    Examples:
        >>> snap_to_grid(np.array([[0.1, 0.1], [0.9, 0.6]]), [None, np.array([0.25, 0.75])]).tolist()
        [[0.1, 0.25], [0.9, 0.75]]
    """
    X = np.array(X, dtype=float, copy=True)
    if grid is None:
        return X
    for j, g in enumerate(grid):
        if g is None:
            continue
        idx = np.clip(np.searchsorted(g, X[:, j]), 1, max(len(g) - 1, 1))
        lo = g[idx - 1]
        hi = g[np.minimum(idx, len(g) - 1)]
        X[:, j] = np.where(np.abs(X[:, j] - lo) <= np.abs(hi - X[:, j]), lo, hi)
    return X


def fit_independent_gps(X: np.ndarray, Y: np.ndarray, seed: int, feature: str = "ADUMBO") -> list:
    """One BoTorch ``SingleTaskGP`` per objective column of ``Y`` on ``X`` (float64), fitted by marginal
    likelihood (the prior hyper-parameters are kept when fitting fails), in eval mode."""
    torch = require("torch")
    require("botorch", feature=feature)
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    models = []
    for i in range(Y.shape[1]):
        yt = torch.as_tensor(Y[:, i : i + 1], dtype=torch.float64)
        gp = SingleTaskGP(Xt, yt)
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        except Exception:  # noqa: BLE001 - keep the prior hyper-parameters when fitting fails
            pass
        gp.eval()
        models.append(gp)
    return models


def fit_gps(
    X: np.ndarray,
    Y: np.ndarray,
    seed: int,
    Yvar: np.ndarray | None = None,
    warm_start: dict[str, Any] | None = None,
    feature: str = "ADUMBO",
) -> tuple[list, dict[str, Any]]:
    """BoTorch ``SingleTaskGP`` surrogates for the columns of ``Y`` on ``X`` (float64), fitted by marginal
    likelihood, in eval mode, and their fitted hyper-parameters (JSON-safe) for the next warm start.

    Without variances one multi-output ``SingleTaskGP`` holds every objective (a batch of independent GPs
    fitted in one L-BFGS run, cheaper than one fit per objective). With ``Yvar`` (standardised-space
    variances, NaN columns = unknown) each objective gets its own model, with ``train_Yvar`` (fixed
    heteroscedastic noise) where its column is finite. ``warm_start`` (the second value returned by the
    previous call) starts the fit at the previous hyper-parameters when the model layout matches; the
    prior's hyper-parameters are kept when fitting fails.
    """
    torch = require("torch")
    require("botorch", feature=feature)
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    m = Y.shape[1]
    fixed = [] if Yvar is None else [j for j in range(m) if np.all(np.isfinite(Yvar[:, j]))]
    groups = [[j] for j in range(m)] if fixed else [list(range(m))]
    key = f"dim={X.shape[1]};groups={groups};fixed={fixed}"
    warm = warm_start["params"] if warm_start and warm_start.get("key") == key else None
    torch.manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    models, params = [], []
    for g, cols in enumerate(groups):
        yt = torch.as_tensor(Y[:, cols], dtype=torch.float64)
        kw = {"train_Yvar": torch.as_tensor(Yvar[:, cols], dtype=torch.float64)} if cols[0] in fixed else {}
        gp = SingleTaskGP(Xt, yt, **kw)
        if warm is not None:
            with torch.no_grad():
                for name, p in gp.named_parameters():
                    if name in warm[g] and tuple(np.shape(warm[g][name])) == tuple(p.shape):
                        p.copy_(torch.as_tensor(warm[g][name], dtype=p.dtype))
        try:
            _fit_mll(gp, Xt)
        except _UnsupportedModel:  # pragma: no cover - a BoTorch release with other defaults: its own fit
            try:
                fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
            except Exception:  # noqa: BLE001 - keep the prior (or warm-start) hyper-parameters
                pass
        except Exception:  # noqa: BLE001 - keep the prior (or warm-start) hyper-parameters when fitting fails
            pass
        gp.eval()
        models.append(gp)
        params.append({name: p.detach().tolist() for name, p in gp.named_parameters()})
    return models, {"key": key, "params": params}


class _UnsupportedModel(TypeError):
    pass


_MLL_PARAMS = {"likelihood.noise_covar.raw_noise", "mean_module.raw_constant", "covar_module.raw_lengthscale"}
_MLL_PRIORS = {"likelihood.noise_covar.noise_prior", "covar_module.lengthscale_prior"}


def _mll_loss(gp, X):
    """``raw -> -(exact marginal log likelihood + log priors) / n`` of a (batched) default ``SingleTaskGP``,
    summed over its outputs: the loss BoTorch's ``fit_gpytorch_mll`` minimises (tested equal to
    ``ExactMarginalLogLikelihood``), written as a few tensor operations instead of GPyTorch's module
    machinery, which cost milliseconds per evaluation. ``raw`` is the flat vector of the model's raw
    parameters in ``named_parameters`` order; the constraints and priors are the model's own objects."""
    import torch
    from gpytorch.kernels import RBFKernel
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood

    names = [n for n, _ in gp.named_parameters()]
    priors = {n for n, *_ in gp.named_priors()}
    fixed = isinstance(gp.likelihood, FixedNoiseGaussianLikelihood)
    if (
        not isinstance(gp.covar_module, RBFKernel)
        or not isinstance(gp.likelihood, (GaussianLikelihood, FixedNoiseGaussianLikelihood))
        or not set(names) <= _MLL_PARAMS
        or not priors <= _MLL_PRIORS
        or getattr(gp, "input_transform", None) is not None
    ):
        raise _UnsupportedModel(f"hand-written MLL for SingleTaskGP's defaults only, got {gp}")
    shapes = [p.shape for _, p in gp.named_parameters()]
    sizes = [int(np.prod(sh)) for sh in shapes]
    y = gp.train_targets.detach()
    q = gp.num_outputs
    y = y.reshape(q, -1)
    n = y.shape[-1]
    Xb = X.detach()
    cov, lik = gp.covar_module, gp.likelihood
    fixed_noise = lik.noise.detach().reshape(-1, n).expand(q, n) if fixed else None
    eye = torch.eye(n, dtype=torch.float64)
    log2pi = math.log(2 * math.pi)
    from gpytorch.priors import LogNormalPrior

    prior_objs = {"ls": cov.lengthscale_prior}
    if not fixed and "likelihood.noise_covar.noise_prior" in priors:
        prior_objs["noise"] = lik.noise_covar.noise_prior
    if not all(isinstance(p, LogNormalPrior) for p in prior_objs.values()):
        raise _UnsupportedModel(f"hand-written MLL for log-normal priors only, got {prior_objs}")
    prior_par = {k: (p.loc.detach().double(), p.scale.detach().double()) for k, p in prior_objs.items()}

    def lognormal(key, v):  # LogNormalPrior.log_prob(v).sum(), without torch.distributions' overhead
        loc, scale = prior_par[key]
        lv = torch.log(v)
        return (-0.5 * ((lv - loc) / scale) ** 2 - torch.log(scale) - 0.5 * log2pi - lv).sum()

    def loss(raw):
        parts = dict(zip(names, torch.split(raw, sizes)))
        vals = {k: parts[k].reshape(sh) for k, sh in zip(names, shapes)}
        ls = cov.raw_lengthscale_constraint.transform(vals["covar_module.raw_lengthscale"]).reshape(q, 1, -1)
        const = vals["mean_module.raw_constant"].reshape(q, 1)
        if fixed:
            noise = fixed_noise
        else:
            raw_noise = vals["likelihood.noise_covar.raw_noise"]
            noise_val = lik.noise_covar.raw_noise_constraint.transform(raw_noise)
            noise = noise_val.reshape(q, 1).expand(q, n)
        Z = Xb / ls  # (q, n, d)
        sq = (Z * Z).sum(-1)
        d2 = (sq[:, :, None] + sq[:, None, :] - 2.0 * Z @ Z.transpose(-1, -2)).clamp_min(0.0)
        K = torch.exp(-0.5 * d2) + torch.diag_embed(noise)
        L, info = torch.linalg.cholesky_ex(K)
        jitter = 1e-8
        while bool(info.any()) and jitter < 1e-3:  # as GPyTorch's psd_safe_cholesky
            L, info = torch.linalg.cholesky_ex(K + jitter * eye)
            jitter *= 10
        r = (y - const).unsqueeze(-1)
        a = torch.cholesky_solve(r, L)
        ll = (
            -0.5 * (r * a).sum((-1, -2))
            - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            - 0.5 * n * log2pi
        )
        total = ll.sum() + lognormal("ls", ls)
        if "noise" in prior_par:
            total = total + lognormal("noise", noise_val)
        return -total / n

    return loss


def _fit_mll(gp, X, maxiter: int = 200, ftol: float = 1e-9) -> None:
    """Fit a default ``SingleTaskGP``'s raw parameters by L-BFGS-B on :func:`_mll_loss` (start: their current
    values, e.g. a warm start) and write them back.

    BoTorch bounds its positive parameters (lengthscales, noise) below instead of transforming them; here
    they are optimised on a log scale within the same bounds (same optimum, but a lengthscale drifting
    from 5 to 50 on an irrelevant input takes a few steps instead of hundreds)."""
    import torch
    from scipy.optimize import minimize

    loss = _mll_loss(gp, X)
    params = [p for _, p in gp.named_parameters()]
    constraints = dict(gp.named_constraints())
    is_log, bounds = [], []
    for name, p in gp.named_parameters():
        c = constraints.get(f"{name}_constraint")
        lo = float(c.lower_bound.min()) if c is not None and not c.enforced else -np.inf
        log = lo > 0
        is_log += [log] * p.numel()
        bounds += [(math.log(lo), None) if log else (None, None)] * p.numel()
    is_log = np.array(is_log)
    lows = np.array([math.exp(b[0]) if m else -np.inf for b, m in zip(bounds, is_log)])
    raw0 = np.maximum(torch.cat([p.detach().reshape(-1) for p in params]).numpy(), lows)
    x0 = np.where(is_log, np.log(np.where(is_log, raw0, 1.0)), raw0)
    log_t = torch.as_tensor(is_log)

    def fun(x):
        z = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        val = loss(torch.where(log_t, torch.exp(z), z))
        (grad,) = torch.autograd.grad(val, z)
        return val.item(), grad.numpy()

    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter, "ftol": ftol}
    )
    x = res.x if np.isfinite(res.fun) and res.fun <= fun(x0)[0] else x0
    raw = np.where(is_log, np.exp(np.where(is_log, x, 0.0)), x)
    with torch.no_grad():
        for p, v in zip(
            params, torch.split(torch.as_tensor(raw, dtype=torch.float64), [p.numel() for p in params])
        ):
            p.copy_(v.reshape(p.shape))


MIN_DISTANCE = 1e-3
"""Smallest normalised distance (Euclidean in the unit cube over ``sqrt(dim)``) between a suggestion and
any observed, pending or same-batch point."""


def _normalised_distance(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Distance of each row of ``A`` to its nearest row of ``B`` (Euclidean / ``sqrt(dim)``; inf if none)."""
    if not len(B):
        return np.full(len(A), np.inf)
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None] - 2.0 * A @ B.T
    return np.sqrt(np.maximum(d2.min(1), 0.0) / A.shape[1])


class _Posterior:
    """The posterior of fitted BoTorch ``SingleTaskGP`` surrogates (RBF kernel, constant mean, Gaussian or
    fixed noise, ``Standardize`` outcome transform), evaluated in NumPy.

    Same numbers as ``model.posterior(X)`` (latent mean and variance, untransformed; tested against BoTorch
    to 1e-8) at a fraction of the cost: ADUMBO evaluates the surrogates on thousands of points per step
    (candidate pool, two NSGA-II runs), where BoTorch's per-call overhead dominated. :meth:`condition` adds
    points at given values with the same hyper-parameters (the kriging believer of a batch).
    """

    def __init__(self, X, ls, const, noise, yt, ymean, ystd) -> None:
        from scipy.linalg import cho_factor, cho_solve

        self.X, self.ls, self.const, self.noise = X, ls, const, noise
        self.yt, self.ymean, self.ystd = yt, ymean, ystd
        self._chol, self._alpha = [], []
        for j in range(len(ls)):
            K = self._kernel(j, X, X)
            K[np.diag_indices_from(K)] += noise[j]
            c = cho_factor(K, lower=True)
            self._chol.append(c[0])
            self._alpha.append(cho_solve(c, yt[j] - const[j]))

    @classmethod
    def from_models(cls, models, X: np.ndarray) -> _Posterior:
        from gpytorch.kernels import RBFKernel

        n = len(X)
        ls, const, noise, yt, ymean, ystd = [], [], [], [], [], []
        for gp in models:
            if not isinstance(gp.covar_module, RBFKernel) or getattr(gp, "input_transform", None) is not None:
                raise TypeError(
                    f"_Posterior supports SingleTaskGP's default RBF kernel, got {gp.covar_module}."
                )
            q = gp.num_outputs
            ls.append(gp.covar_module.lengthscale.detach().numpy().reshape(q, -1))
            const.append(gp.mean_module.constant.detach().numpy().reshape(q))
            noise.append(np.broadcast_to(gp.likelihood.noise.detach().numpy().reshape(q, -1), (q, n)))
            yt.append(gp.train_targets.detach().numpy().reshape(q, n))
            ot = gp.outcome_transform
            ymean.append(ot.means.detach().numpy().reshape(q))
            ystd.append(ot.stdvs.detach().numpy().reshape(q))
        cat = np.concatenate
        return cls(np.asarray(X, float), cat(ls), cat(const), cat(noise), cat(yt), cat(ymean), cat(ystd))

    def _kernel(self, j: int, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        a, b = A / self.ls[j], B / self.ls[j]
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
        return np.exp(-0.5 * np.maximum(d2, 0.0))

    def predict(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation, each ``(len(Xc), n_outputs)``, in the targets' units."""
        from scipy.linalg import solve_triangular

        Xc = np.asarray(Xc, dtype=float)
        mus, sds = [], []
        for j in range(len(self.ls)):
            Ks = self._kernel(j, Xc, self.X)
            v = solve_triangular(self._chol[j], Ks.T, lower=True, check_finite=False)
            var = np.maximum(1.0 - (v * v).sum(0), 0.0) * self.ystd[j] ** 2
            mus.append((self.const[j] + Ks @ self._alpha[j]) * self.ystd[j] + self.ymean[j])
            sds.append(np.sqrt(np.maximum(var, 1e-12)))
        return np.stack(mus, 1), np.stack(sds, 1)

    def fantasy_means(
        self, Xc: np.ndarray, Xp: np.ndarray, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Joint fantasies of points ``Xp`` not yet observed, and the posterior means they imply at ``Xc``.

        Draws ``n_samples`` observations ``y_s`` of ``Xp`` from the joint posterior (latent covariance plus
        each output's median noise, as :meth:`condition` assumes) and returns ``(Yp, Mc)``: ``Yp``
        ``(n_samples, len(Xp), n_outputs)`` the fantasies and ``Mc`` ``(n_samples, len(Xc), n_outputs)``
        the posterior means at ``Xc`` after observing them (targets' units). Averaged over the samples,
        ``Mc`` is the current mean; each sample moves the means of the points correlated with ``Xp``
        together with the fantasy, which is what a mean-based batch criterion must see (the kriging
        believer, one fantasy at the mean, leaves every mean where it was).
        """
        from scipy.linalg import solve_triangular

        Xc, Xp = np.asarray(Xc, float), np.asarray(Xp, float)
        p, k = len(Xp), len(self.ls)
        Yp = np.empty((n_samples, p, k))
        Mc = np.empty((n_samples, len(Xc), k))
        mu_c, _ = self.predict(Xc)
        mu_p, _ = self.predict(Xp)
        for j in range(k):
            kc, kp = self._kernel(j, Xc, self.X), self._kernel(j, Xp, self.X)
            vc = solve_triangular(self._chol[j], kc.T, lower=True, check_finite=False)
            vp = solve_triangular(self._chol[j], kp.T, lower=True, check_finite=False)
            s2 = self.ystd[j] ** 2
            S_cp = (self._kernel(j, Xc, Xp) - vc.T @ vp) * s2  # (C, p) posterior covariance
            S_pp = (self._kernel(j, Xp, Xp) - vp.T @ vp) * s2
            S_pp = 0.5 * (S_pp + S_pp.T) + np.eye(p) * (np.median(self.noise[j]) * s2 + 1e-9 * s2)
            L = np.linalg.cholesky(S_pp)
            Yp[:, :, j] = mu_p[:, j] + rng.standard_normal((n_samples, p)) @ L.T
            gain = np.linalg.solve(S_pp, S_cp.T).T  # (C, p)
            Mc[:, :, j] = mu_c[:, j] + (Yp[:, :, j] - mu_p[:, j]) @ gain.T
        return Yp, Mc

    def condition(self, Xp: np.ndarray, Yp: np.ndarray) -> _Posterior:
        """The posterior with points ``Xp`` observed at ``Yp`` (targets' units) and the same hyper-parameters;
        their noise is each output's median noise."""
        Yt = ((np.asarray(Yp, float) - self.ymean) / self.ystd).T
        extra = np.repeat(np.median(self.noise, axis=1, keepdims=True), len(Xp), axis=1)
        return _Posterior(
            np.vstack([self.X, Xp]),
            self.ls,
            self.const,
            np.hstack([self.noise, extra]),
            np.hstack([self.yt, Yt]),
            self.ymean,
            self.ystd,
        )


def _infer_ref_point(front: np.ndarray, scale: float = 0.1, eps: float = 0.0) -> np.ndarray:
    """BoTorch's rule (maximisation): nadir of the observed Pareto front minus ``scale`` times its range.

    Anchoring the reference point at the front (not at the worst observed values) keeps the
    hypervolume-improvement term from rewarding extreme trade-offs far outside the front's region.
    With ``eps > 0`` the nadir is taken over the points of the front that no other front point
    ``eps``-dominates (better by more than ``eps`` times the front's range in one objective while at most
    ``eps`` times the range worse in all others): weakly Pareto points such as DTLZ2's edge points
    (``f1 = 0`` exactly, ``f2`` large) then no longer drag the reference point, and with it ``G``'s box,
    outwards with every such evaluation.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point

    front = np.asarray(front, dtype=float)
    if eps > 0 and len(front) > 2:
        r = front.max(0) - front.min(0)
        slack = eps * np.where(r > 0, r, 1.0)
        keep = np.ones(len(front), dtype=bool)
        for k, p in enumerate(front):
            keep[k] = not np.any(np.all(front + slack >= p, axis=1) & np.any(front > p + slack, axis=1))
        if keep.any():
            front = front[keep]
    return infer_reference_point(torch.as_tensor(front, dtype=torch.float64), scale=scale).numpy()


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(v)), float(np.max(v))
    return np.zeros_like(v) if hi - lo < 1e-12 else (v - lo) / (hi - lo)


def _hv_improvement_2d(P: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """:func:`_hv_improvement` for two objectives, vectorised over the rows of ``P`` (same values).

    The part of the box ``[ref, p]`` already dominated by the front is the hypervolume of the points
    ``min(f_i, p)``; sorted by the first objective (descending) they form a staircase whose hypervolume is
    ``sum_i (x_i - x_{i+1}) (y_i - ref_2)``."""
    P = np.asarray(P, float)
    F = front[pareto_mask(front)]
    F = F[np.argsort(-F[:, 0], kind="stable")]
    D = F[None] - P[:, None]  # (P, n, 2)
    dominated = np.all(D >= 0, axis=2)
    eps = np.where(dominated, D.max(axis=2), np.inf).min(axis=1)
    Q = np.minimum(F[None], P[:, None])
    x = np.maximum(Q[..., 0], ref[0])
    y = np.maximum(Q[..., 1], ref[1])
    x_next = np.concatenate([x[:, 1:], np.full((len(P), 1), ref[0])], axis=1)
    covered = ((x - x_next) * (y - ref[1])).sum(1)
    box = np.prod(np.maximum(P - ref, 0.0), axis=1)
    return np.where(np.isfinite(eps), -eps, box - covered)


def _hv_improvement(P: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume improvement of each row of ``P`` over ``front`` (maximisation); rows that improve
    nothing get minus their additive-epsilon distance to non-domination, so ``G`` still ranks them."""
    from lightning_addons.tuner._pareto import _hso

    front = front[pareto_mask(front)]
    base = hypervolume(front, ref)
    out = np.empty(len(P))
    for k, p in enumerate(P):
        dominated_by = np.all(front >= p, axis=1)
        if np.any(dominated_by):
            # smallest eps with p + eps not dominated by any front point
            out[k] = -float(np.min(np.max(front[dominated_by] - p, axis=1)))
        else:  # the front without the points p dominates, plus p, is non-dominated: no re-filtering
            U = np.vstack([front[~np.all(p >= front, axis=1)], p])
            U = U[np.all(U > ref, axis=1)]
            out[k] = (float(_hso(U - ref)) if len(U) else 0.0) - base
    return out


class QNEHVI(AskTellOptimizer):
    """BoTorch's qLogNEHVI on independent GPs (baseline; slow: seconds to tens of seconds per step).

    Args:
        dim, directions, seed, log_objectives: as for :class:`AskTellOptimizer`.
        n_init: Sobol points before the model is used.
        ref_point: reference point in objective units (default: worst observed minus 10% of the range).
        num_restarts, raw_samples: settings of ``botorch.optim.optimize_acqf``.

    Examples:
        >>> QNEHVI(2, ["minimize", "minimize"], n_init=3).ask(1).shape
        (1, 2)
    """

    name = "qnehvi"

    def __init__(
        self,
        dim,
        directions,
        seed=0,
        n_init=10,
        ref_point=None,
        log_objectives=(),
        num_restarts=4,
        raw_samples=256,
    ):
        super().__init__(dim, directions, seed=seed, log_objectives=log_objectives)
        self.n_init = int(n_init)
        self.ref_point = None if ref_point is None else [float(v) for v in ref_point]
        self.num_restarts, self.raw_samples = int(num_restarts), int(raw_samples)

    def _suggest(self, n, pending):
        if self.n_observed + len(pending) < self.n_init or self.n_observed < 2:
            return _sobol(n, self.dim, self.seed, skip=self.n_asked)
        torch = require("torch")
        require("botorch", feature="qnehvi")
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.models import ModelListGP
        from botorch.optim import optimize_acqf
        from botorch.sampling import SobolQMCNormalSampler

        X, Ys, mean, std = self._standardised_targets()
        models = fit_independent_gps(X, Ys, seed=self.seed + self.n_asked, feature="qnehvi")
        ref = self._user_ref_point(mean, std)
        if ref is None:
            ref = Ys.min(0) - 0.1 * (Ys.max(0) - Ys.min(0) + 1e-9)
        torch.manual_seed(self.seed + self.n_asked)
        acq = qLogNoisyExpectedHypervolumeImprovement(
            model=ModelListGP(*models),
            ref_point=torch.as_tensor(ref, dtype=torch.float64).tolist(),
            X_baseline=torch.as_tensor(X, dtype=torch.float64),
            X_pending=torch.as_tensor(pending, dtype=torch.float64) if len(pending) else None,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([64]), seed=self.seed + self.n_asked),
            prune_baseline=True,
        )
        bounds = torch.stack([torch.zeros(self.dim), torch.ones(self.dim)]).double()
        cand, _ = optimize_acqf(
            acq,
            bounds=bounds,
            q=n,
            num_restarts=self.num_restarts,
            raw_samples=self.raw_samples,
            options={"batch_limit": 5, "maxiter": 100},
            sequential=True,
        )
        return cand.detach().numpy()


def make_optimizer(
    algorithm: str, dim: int, directions: Sequence[str], seed: int = 0, **kwargs
) -> AskTellOptimizer:
    """Build an ask/tell optimiser by name: ``adumbo`` (also ``adumbo_w1`` = USeMO, ``adumbo_w0`` =
    mean only), ``random``, ``sobol`` or ``qnehvi``.

    Raises:
        ValueError: unknown algorithm.

    Examples:
        >>> make_optimizer("sobol", 3, ["minimize"]).ask(2).shape
        (2, 3)
    """
    name = algorithm.lower()
    if name == "adumbo_w1":
        return ADUMBO(dim, directions, seed=seed, weight=1.0, **kwargs)
    if name == "adumbo_w0":
        return ADUMBO(dim, directions, seed=seed, weight=0.0, **kwargs)
    if name == "adumbo":
        return ADUMBO(dim, directions, seed=seed, **kwargs)
    kwargs.pop("initial_points", None)
    if name == "random":
        kwargs.pop("n_init", None)
        kwargs.pop("ref_point", None)
        return RandomSearch(dim, directions, seed=seed, **kwargs)
    if name == "sobol":
        kwargs.pop("n_init", None)
        kwargs.pop("ref_point", None)
        return SobolSearch(dim, directions, seed=seed, **kwargs)
    if name == "qnehvi":
        return QNEHVI(dim, directions, seed=seed, **kwargs)
    raise ValueError(
        f"`algorithm` must be one of {[*ALGORITHMS, 'adumbo_w1', 'adumbo_w0']} (or an Optuna sampler name in "
        f"HyperTuner: 'tpe', 'nsga2', 'gp'), got {algorithm!r}."
    )
