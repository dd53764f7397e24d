"""Pareto utilities in NumPy (no optional dependency): non-dominated masks, exact 2-D/3-D hypervolume.

All functions use the *maximisation* convention unless told otherwise; :func:`to_max` converts
objective values with their directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIRECTIONS = ("minimize", "maximize")


def check_directions(directions: Sequence[str]) -> list[str]:
    out = []
    for d in directions:
        d2 = {"min": "minimize", "max": "maximize"}.get(str(d).lower(), str(d).lower())
        if d2 not in DIRECTIONS:
            raise ValueError(
                f"`direction` must be one of ['minimize', 'maximize'] (or 'min'/'max'), got {d!r}."
            )
        out.append(d2)
    if not out:
        raise ValueError("`directions` must name at least one objective, got an empty list.")
    return out


def to_max(Y: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Objective values with every objective turned into one to maximise."""
    Y = np.asarray(Y, dtype=float)
    sign = np.array([1.0 if d == "maximize" else -1.0 for d in check_directions(directions)])
    return Y * sign


def log_columns(Y: np.ndarray, columns: Sequence[int], floor: float | None = None) -> np.ndarray:
    """A copy of ``Y`` (``[n, m]`` or ``[m]``) with natural logs taken in ``columns`` (log-scale objectives).

    ``floor=None``: non-positive values become NaN (a failed or impossible reading; positive values below
    1e-300 are clamped there); otherwise values are
    clamped to ``floor`` first (``log(max(y, floor))``), so every row stays finite.

    Examples:
        >>> log_columns(np.array([[1.0, 0.0], [2.0, np.e]]), [1]).tolist()
        [[1.0, nan], [2.0, 1.0]]
        >>> log_columns(np.array([0.0, 1.0]), [0], floor=1e-12).round(3).tolist()
        [-27.631, 1.0]
    """
    Y = np.array(Y, dtype=float, copy=True)
    cols = Y[..., list(columns)]
    with np.errstate(divide="ignore", invalid="ignore"):
        if floor is None:
            cols = np.where(cols > 0, np.log(np.maximum(cols, 1e-300)), np.nan)
        else:
            cols = np.log(np.maximum(cols, floor))
    Y[..., list(columns)] = cols
    return Y


def dominates(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when row ``A[i]`` dominates row ``B[j]`` (maximisation)."""
    ge = np.all(A[:, None, :] >= B[None, :, :], axis=-1)
    gt = np.any(A[:, None, :] > B[None, :, :], axis=-1)
    return ge & gt


def nondominated_mask(F: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Rows of ``F`` (finite, maximisation) that no row dominates, in chunks: memory O(chunk * n).

    Two objectives take an exact ``O(n log n)`` sweep (:func:`_nondominated_mask_2d`) instead.
    """
    if F.ndim == 2 and F.shape[1] == 2 and len(F) > 1:
        return _nondominated_mask_2d(F)
    mask = np.ones(len(F), dtype=bool)
    for s in range(0, len(F), chunk):
        mask[s : s + chunk] = ~dominates(F, F[s : s + chunk]).any(0)
    return mask


def _nondominated_mask_2d(F: np.ndarray) -> np.ndarray:
    """Exact non-dominated mask of finite 2-column rows (maximisation) by one sort.

    Row ``i`` is dominated when a row with a strictly larger first value has a second value ``>=`` its
    own, or a row with an equal first value has a strictly larger second value (exact duplicates do not
    dominate each other), the same definition as :func:`dominates`.
    """
    a, b = F[:, 0], F[:, 1]
    order = np.lexsort((-b, -a))  # first value descending, ties by second value descending
    a_s, b_s = a[order], b[order]
    # start of each group of equal first values; the group's best second value is its first row's
    new_group = np.r_[True, a_s[1:] != a_s[:-1]]
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    group_best = b_s[starts]
    # best second value over all strictly larger first values (the groups before this one)
    before = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]
    dominated_s = (before[group] >= b_s) | (group_best[group] > b_s)
    mask = np.empty(len(F), dtype=bool)
    mask[order] = ~dominated_s
    return mask


def pareto_mask(Y: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``Y`` (maximisation; rows with NaN are dominated).

    Examples:
        >>> pareto_mask(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])).tolist()
        [True, True, False]
    """
    Y = np.asarray(Y, dtype=float)
    finite = np.all(np.isfinite(Y), axis=1)
    mask = finite.copy()
    mask[finite] = nondominated_mask(Y[finite])
    # keep one copy (the first) of exact duplicates
    idx = np.flatnonzero(mask)
    if len(idx) > 1:
        _, first = np.unique(Y[idx], axis=0, return_index=True)
        keep = np.zeros(len(idx), dtype=bool)
        keep[first] = True
        mask[idx[~keep]] = False
    return mask


def hypervolume(Y: np.ndarray, ref_point: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``Y`` above ``ref_point`` (maximisation), any number of objectives.

    Uses the simple inclusion of slices (HSO) recursion, fine for the fronts of a tuning run (< a few
    hundred points, <= 4 objectives). Tested against BoTorch's ``Hypervolume``.

    Examples:
        >>> hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), [0.0, 0.0])
        3.0
    """
    Y = np.asarray(Y, dtype=float)
    ref = np.asarray(ref_point, dtype=float)
    if Y.size == 0:
        return 0.0
    Y = Y[np.all(np.isfinite(Y), axis=1)]
    Y = Y[np.all(Y > ref, axis=1)]
    if len(Y) == 0:
        return 0.0
    Y = Y[pareto_mask(Y)]
    return float(_hso(Y - ref))


def _hso(P: np.ndarray) -> float:
    m = P.shape[1]
    if m == 1:
        return float(P[:, 0].max())
    if m == 2:
        order = np.argsort(-P[:, 0])
        P = P[order]
        vol, best_y = 0.0, 0.0
        for x, y in P:
            if y > best_y:
                vol += x * (y - best_y)
                best_y = y
        return vol
    # slice along the last objective
    order = np.argsort(P[:, -1])
    P = P[order]
    vol, prev = 0.0, 0.0
    for k in range(len(P)):
        h = P[k, -1] - prev
        if h > 0:
            rest = P[k:, :-1]
            rest = rest[pareto_mask(rest)]
            vol += h * _hso(rest)
        prev = P[k, -1]
    return vol
