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

    def tell(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Record observations; rows of ``Y`` holding NaN/inf mark failed evaluations."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        Y = np.atleast_2d(np.asarray(Y, dtype=float))
        if X.shape[1] != self.dim:
            raise ValueError(f"`X` must have {self.dim} columns, got shape {X.shape}.")
        if Y.shape != (len(X), self.n_objectives):
            raise ValueError(f"`Y` must have shape ({len(X)}, {self.n_objectives}), got {Y.shape}.")
        self.X = np.vstack([self.X, X])
        self.Y = np.vstack([self.Y, Y])

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "directions": list(self.directions),
            "seed": self.seed,
            "log_objectives": list(self.log_objectives),
            "X": self.X.tolist(),
            "Y": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.Y],
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
    ) -> None:
        super().__init__(dim, directions, seed=seed, log_objectives=log_objectives)
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
        self.last_weight: float | None = None

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
    def _fit(self, X: np.ndarray, Y: np.ndarray):
        return fit_independent_gps(X, Y, seed=self.seed + self.n_asked, feature="ADUMBO")

    @staticmethod
    def _predict(models, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        Xt = torch.as_tensor(Xc, dtype=torch.float64)
        mus, sds = [], []
        with torch.no_grad():
            for gp in models:
                post = gp.posterior(Xt)
                mus.append(post.mean.squeeze(-1).numpy())
                sds.append(post.variance.clamp_min(1e-12).sqrt().squeeze(-1).numpy())
        return np.stack(mus, 1), np.stack(sds, 1)

    def _condition(self, models, X, Y, Xp):
        """Kriging believer: refit-free GPs with the pending points added at their predicted means."""
        import torch
        from botorch.models import SingleTaskGP

        if len(Xp) == 0:
            return models
        mu, _ = self._predict(models, Xp)
        Xa = torch.as_tensor(np.vstack([X, Xp]), dtype=torch.float64)
        new = []
        for i, gp in enumerate(models):
            ya = torch.as_tensor(np.concatenate([Y[:, i], mu[:, i]])[:, None], dtype=torch.float64)
            g2 = SingleTaskGP(Xa, ya)
            g2.load_state_dict(gp.state_dict(), strict=False)
            g2.eval()
            new.append(g2)
        return new

    def _pool(self, rng: np.random.Generator, front_X: np.ndarray) -> np.ndarray:
        pool = [_sobol(self.pool_size, self.dim, int(rng.integers(2**31)))]
        if len(front_X) and self.perturbations:
            scales = np.array([0.01, 0.03, 0.1, 0.2])
            reps = np.repeat(front_X, self.perturbations, axis=0)
            sd = rng.choice(scales, size=(len(reps), 1))
            # perturb a random subset of coordinates (all of them in low dimension)
            mask = rng.random(reps.shape) < max(0.5, 2.0 / self.dim)
            pool.append(np.clip(reps + mask * sd * rng.standard_normal(reps.shape), 0.0, 1.0))
        return np.vstack(pool)

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
                m, s = self._predict(models, x)
                return m + sqb * s

            def mean(x):
                return self._predict(models, x)[0]

            init = np.vstack([front_X, pool[keep]])
            for fun in (ucb, mean):
                order = rng.permutation(len(init))[: self.nsga2_pop]
                Xn, _ = nsga2(
                    fun, self.dim, rng, pop_size=self.nsga2_pop, n_gen=self.nsga2_gens, init=init[order]
                )
                cands.append(Xn)
        return np.vstack(cands)

    def _bo_step(self, n: int, pending: np.ndarray) -> np.ndarray:
        rng = self._rng()
        X, Ys, mean, std = self._standardised_targets()
        base = self._fit(X, Ys)
        models = self._condition(base, X, Ys, pending)
        front = Ys[pareto_mask(Ys)]
        ref = self._user_ref_point(mean, std)
        if ref is None:
            ref = _infer_ref_point(front, eps=self.ref_eps)
        if len(pending):
            mu_p, _ = self._predict(models, pending)
            front = np.vstack([front, mu_p])
            front = front[pareto_mask(front)]
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
            # drop candidates equal to observed / pending / chosen points
            taken = np.vstack([X, pending] + ([np.asarray(chosen)] if chosen else []))
            dist = np.min(np.abs(pool[cand][:, None, :] - taken[None]).max(-1), axis=1)
            cand = cand[dist > 1e-6] if np.any(dist > 1e-6) else cand
            U = np.log(2 * sqb * sd[cand]).sum(1)
            G = _hv_improvement(mu[cand], front, ref)
            S = w * _minmax(U) + (1 - w) * _minmax(G)
            best = cand[int(np.argmax(S))]
            chosen.append(pool[best])
            front = np.vstack([front, mu[best]])
            front = front[pareto_mask(front)]
            if n > 1:  # kriging believer: shrink the uncertainty near the chosen points (batch diversity)
                models = self._condition(base, X, Ys, np.vstack([pending, np.asarray(chosen)]))
                mu, sd = self._predict(models, pool)
        return np.asarray(chosen)

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
