"""A small vectorised NSGA-II in NumPy (no optional dependency), used by ADUMBO to optimise its cheap
surrogate objectives (GP means and optimistic bounds) over the unit cube.

Deb et al. (2002): binary tournament on (rank, crowding distance), simulated binary crossover (SBX),
polynomial mutation, elitist (mu + lambda) survival by non-dominated rank then crowding distance.
All functions use the *maximisation* convention of :mod:`lightning_addons.tuner._pareto`.
Tested against Optuna's NSGA-II machinery (non-dominated sorting) and a brute-force dominance check.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lightning_addons.tuner._pareto import dominates, nondominated_mask


def nondominated_rank(F: np.ndarray) -> np.ndarray:
    """Non-dominated sorting: rank 0 is the Pareto front, rank 1 the front of the rest, and so on.

    Examples:
        >>> nondominated_rank(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-1.0, -1.0]])).tolist()
        [0, 0, 1, 2]
    """
    F = np.asarray(F, dtype=float)
    if F.ndim == 2 and F.shape[1] == 2:  # peel fronts with the O(n log n) two-objective sweep
        rank = np.full(len(F), -1, dtype=np.int64)
        left, r = np.arange(len(F)), 0
        while left.size:
            front = nondominated_mask(F[left])
            rank[left[front]] = r
            left, r = left[~front], r + 1
        return rank
    D = dominates(F, F)
    n_dom = D.sum(0).astype(np.int64)  # how many points dominate each point
    rank = np.full(len(F), -1, dtype=np.int64)
    r = 0
    current = np.flatnonzero(n_dom == 0)
    while current.size:
        rank[current] = r
        n_dom = n_dom - D[current].sum(0)
        n_dom[rank >= 0] = -1
        current = np.flatnonzero(n_dom == 0)
        r += 1
    return rank


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """Crowding distance of the rows of one front (boundary points get ``inf``)."""
    n, m = F.shape
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        f = F[order, k]
        span = f[-1] - f[0]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0:
            out[order[1:-1]] += (f[2:] - f[:-2]) / span
    return out


def _rank_and_crowding(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-dominated rank of every row and its crowding distance within its front."""
    rank = nondominated_rank(F)
    crowd = np.zeros(len(F))
    for r in np.unique(rank):
        idx = np.flatnonzero(rank == r)
        crowd[idx] = crowding_distance(F[idx])
    return rank, crowd


def _survivors(F: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` rows kept by NSGA-II's survival (rank, then crowding distance)."""
    rank, crowd = _rank_and_crowding(F)
    return np.lexsort((-crowd, rank))[:k]


def _sbx(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, eta: float, prob: float):
    u = rng.random(a.shape)
    beta = np.where(u <= 0.5, (2 * u) ** (1 / (eta + 1)), (1 / (2 * (1 - u))) ** (1 / (eta + 1)))
    swap = (rng.random(a.shape) < 0.5) & (rng.random((len(a), 1)) < prob)
    c1 = np.where(swap, 0.5 * ((1 + beta) * a + (1 - beta) * b), a)
    c2 = np.where(swap, 0.5 * ((1 - beta) * a + (1 + beta) * b), b)
    return c1, c2


def _poly_mutation(X: np.ndarray, rng: np.random.Generator, eta: float, prob: float) -> np.ndarray:
    u = rng.random(X.shape)
    delta = np.where(u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1)))
    mutate = rng.random(X.shape) < prob
    return np.clip(X + mutate * delta, 0.0, 1.0)


def nsga2(
    fun: Callable[[np.ndarray], np.ndarray],
    dim: int,
    rng: np.random.Generator,
    pop_size: int = 64,
    n_gen: int = 40,
    init: np.ndarray | None = None,
    eta_c: float = 15.0,
    eta_m: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise the vector function ``fun`` (``(n, dim) -> (n, m)``) over ``[0, 1]^dim`` with NSGA-II.

    Args:
        fun: batched objective function (maximisation).
        dim: number of inputs.
        rng: NumPy generator (the only source of randomness).
        pop_size: population size (even).
        n_gen: number of generations.
        init: optional starting points (e.g. the observed Pareto set); the rest of the first population
            is uniform random; when more than ``pop_size`` are given, survival picks ``pop_size``.
        eta_c, eta_m: distribution indices of SBX crossover and polynomial mutation.

    Returns:
        ``(X, F)``: the non-dominated points among every point evaluated during the run (an archive
        updated each generation), and their objective values.

    Examples:
        >>> X, F = nsga2(lambda x: np.stack([x[:, 0], 1 - x[:, 0]], 1), 1, np.random.default_rng(0), 8, 3)
        >>> bool(np.all(nondominated_rank(F) == 0))
        True
    """
    pop_size = max(4, int(pop_size) + int(pop_size) % 2)
    P = rng.random((pop_size, dim))
    if init is not None and len(init):
        init = np.clip(np.atleast_2d(np.asarray(init, dtype=float)), 0.0, 1.0)
        P = np.vstack([init, P[: max(0, pop_size - len(init))]])
    FP = np.asarray(fun(P), dtype=float)
    if len(P) > pop_size:
        keep = _survivors(FP, pop_size)
        P, FP = P[keep], FP[keep]
    ok = np.all(np.isfinite(FP), axis=1)
    arch_X, arch_F = _front(P[ok], FP[ok])
    pm = 1.0 / dim
    for _ in range(int(n_gen)):
        rank, crowd = _rank_and_crowding(FP)
        # binary tournaments
        i, j = rng.integers(len(P), size=(2, pop_size))
        better = (rank[i] < rank[j]) | ((rank[i] == rank[j]) & (crowd[i] >= crowd[j]))
        parents = np.where(better, i, j)
        a, b = P[parents[0::2]], P[parents[1::2]]
        c1, c2 = _sbx(a, b, rng, eta_c, prob=0.9)
        Q = _poly_mutation(np.vstack([c1, c2]), rng, eta_m, pm)
        FQ = np.asarray(fun(Q), dtype=float)
        ok = np.all(np.isfinite(FQ), axis=1)
        arch_X, arch_F = _front(np.vstack([arch_X, Q[ok]]), np.vstack([arch_F, FQ[ok]]))
        R, FR = np.vstack([P, Q]), np.vstack([FP, FQ])
        keep = _survivors(FR, pop_size)
        P, FP = R[keep], FR[keep]
    return arch_X, arch_F


def _front(X: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-dominated rows (one copy of duplicated inputs), kept in their order."""
    mask = nondominated_mask(F)
    _, uniq = np.unique(X[mask].round(12), axis=0, return_index=True)
    sel = np.flatnonzero(mask)[np.sort(uniq)]
    return X[sel], F[sel]
