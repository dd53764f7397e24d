"""Gaussian mixtures on 2-D point clouds, one per filter: a batched EM in torch and a scikit-learn loop.

Both backends fit full-covariance mixtures initialised by k-means (like scikit-learn's default), with
``reg_covar=1e-6``, ``tol=1e-3`` and ``max_iter=100``, and return the same :class:`MixtureFit`. The torch
backend fits every filter at once (closed-form 2x2 inverses, per-problem convergence);
:func:`fit_gmm_torch_many` puts several K (and several layers' filters) into the same batch. The
scikit-learn backend is the reference it is tested against.

Examples:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> pts = torch.cat([torch.randn(2, 60, 2, generator=g), torch.randn(2, 40, 2, generator=g) + 6], dim=1)
    >>> fit = fit_gmm_torch(pts, 2, seed=0)
    >>> sorted(fit.labels[0].bincount().tolist())
    [40, 60]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

REG_COVAR = 1e-6
TOL = 1e-3
MAX_ITER = 100
LOG_2PI = math.log(2 * math.pi)


@dataclass
class MixtureFit:
    """Fitted mixtures for a batch of ``B`` point clouds of ``N`` 2-D points with ``K`` components.

    Attributes:
        weights: ``[B, K]``; means: ``[B, K, 2]``; covariances: ``[B, K, 2, 2]``.
        labels: ``[B, N]`` hard assignment (most probable component).
        log_prob: ``[B, N]`` log density of each point under its mixture.
        converged: ``[B]`` whether EM met the tolerance.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    labels: torch.Tensor
    log_prob: torch.Tensor
    converged: torch.Tensor


def _check_points(points: torch.Tensor, k: int) -> torch.Tensor:
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"`points` must be [B, N, 2], got shape {tuple(points.shape)}.")
    if not isinstance(k, int) or k < 1 or k >= points.shape[1]:
        raise ValueError(f"`k` must be an integer in [1, N-1] = [1, {points.shape[1] - 1}], got {k!r}.")
    return points.to(torch.float64)


def _sqdist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[B, N, K]`` squared distances between points ``[B, N, 2]`` and centres ``[B, K, 2]``."""
    d0 = x[:, :, 0, None] - c[:, None, :, 0]
    d1 = x[:, :, 1, None] - c[:, None, :, 1]
    return d0 * d0 + d1 * d1


def _kmeanspp_seed(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding of every problem of a batch ``[B, N, 2]``; returns centres ``[B, k, 2]``."""
    b, n, _ = x.shape
    ar = torch.arange(b)
    first = torch.randint(0, n, (b,), generator=generator)
    centres = x[ar, first][:, None, :]  # [B, 1, 2]
    closest = _sqdist(x, centres)[..., 0]
    trials = 2 + int(math.log(k))
    for _ in range(1, k):
        probs = closest.clamp_min(0) + 1e-300
        cand = torch.multinomial(
            probs / probs.sum(-1, keepdim=True), trials, replacement=True, generator=generator
        )
        cand_pts = torch.gather(x, 1, cand[..., None].expand(b, trials, 2))  # [B, T, 2]
        d_cand = _sqdist(x, cand_pts)  # [B, N, T]
        pot = torch.minimum(closest[..., None], d_cand).sum(1)  # [B, T]
        best = pot.argmin(-1)
        centres = torch.cat([centres, cand_pts[ar, best][:, None, :]], dim=1)
        closest = torch.minimum(closest, d_cand[ar, :, best])
    return centres


def _sqdist_kn(x0: torch.Tensor, x1: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[B, K, N]`` squared distances between points (coordinates ``x0``, ``x1``: ``[B, N]``) and centres
    ``[B, K, 2]``, up to the per-point constant ``|x|^2`` (which leaves every arg-min unchanged):
    ``|c|^2 - 2 x.c`` in three elementwise passes, as scikit-learn's k-means computes distances. The
    ``K``-major layout makes the arg-min over ``K`` elementwise work across ``N``. Unused (+inf) centres
    get ``+inf`` (never ``nan``)."""
    used = torch.isfinite(c).all(-1)  # [B, K]
    cz = torch.where(used[..., None], c, torch.zeros_like(c))
    cc = torch.where(used, cz.pow(2).sum(-1), torch.full_like(used, torch.inf, dtype=c.dtype))
    d = torch.addcmul(cc[..., None], cz[..., 0, None], x0[:, None, :], value=-2.0)
    return d.addcmul_(cz[..., 1, None], x1[:, None, :], value=-2.0)


def _argbest_dim1(t: torch.Tensor, largest: bool) -> torch.Tensor:
    """``t.argmax(1)`` / ``t.argmin(1)`` (the first extreme, as documented for ``torch.max``/``torch.min`` with
    ``dim``) for ``[B, K, N]`` with small ``K``: the values-and-indices reduction over ``K`` runs across ``N``
    and is several times faster on the CPU than ``argmin``/``argmax`` over the same dimension."""
    return (t.max(1) if largest else t.min(1)).indices


def _lloyd(x: torch.Tensor, centres: torch.Tensor, iters: int = 50, tol: float = 1e-4) -> torch.Tensor:
    """Lloyd iterations from ``centres`` ``[B, K, 2]`` (unused slots at +inf never win).

    A problem stops, as in scikit-learn's ``KMeans``, when no label changes or when the summed squared
    shift of its centres is at most ``tol`` times the mean per-dimension variance of its points; the labels
    returned are always the assignment to the final centres."""
    b, _, _ = x.shape
    k = centres.shape[1]
    tol_abs = x.var(1, unbiased=False).mean(-1) * tol  # [B], sklearn's _tolerance
    x0, x1 = x[..., 0].contiguous(), x[..., 1].contiguous()
    labels = _argbest_dim1(_sqdist_kn(x0, x1, centres), largest=False)
    feats = torch.cat([x, torch.ones_like(x[..., :1])], -1)  # [B, N, 3]: sums and counts in one scatter
    # working batch (global ids `cur`): problems that stopped keep their row, frozen, until they are a fifth
    # of it; then the batch is compacted (copying every iteration would cost as much as the iteration)
    cur = torch.arange(b, device=x.device)
    wc, wl, wt = centres.clone(), labels.clone(), tol_abs
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    for _ in range(iters):
        sums_c = feats.new_zeros(len(cur), k, 3).scatter_add_(1, wl[..., None].expand(-1, -1, 3), feats)
        sums, counts = sums_c[..., :2], sums_c[..., 2]
        new_c = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], wc)
        new_l = _argbest_dim1(_sqdist_kn(x0, x1, new_c), largest=False)
        shift = (new_c - wc).nan_to_num(0.0, posinf=0.0, neginf=0.0).pow(2).sum((-1, -2))
        moved = (new_l != wl).any(-1) & (shift > wt)
        stop = active & ~moved
        if bool(stop.any()):
            labels[cur[stop]] = new_l[stop]  # the assignment to its final centres
        wc, wl, active = new_c, new_l, active & moved
        n_act = int(active.sum())
        if n_act == 0:
            break
        if 5 * n_act <= 4 * len(cur):
            keep = active.nonzero().flatten()
            cur, x0, x1, feats, wc, wl, wt = (t[keep] for t in (cur, x0, x1, feats, wc, wl, wt))
            active = torch.ones(len(keep), dtype=torch.bool, device=x.device)
    else:
        labels[cur[active]] = wl[active]
    return labels


def kmeans_batched(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 50) -> torch.Tensor:
    """Greedy k-means++ seeding then Lloyd iterations for every problem of a batch; returns labels ``[B, N]``."""
    return _lloyd(x, _kmeanspp_seed(x, k, generator), iters)


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg: float):
    eps = 10 * torch.finfo(x.dtype).eps
    rt = resp.transpose(1, 2)  # [B, K, N]
    nk = (rt @ torch.ones_like(x[..., :1]))[..., 0] + eps  # [B, K]
    x0, x1 = x[..., 0:1], x[..., 1:2]
    moments = rt @ torch.cat([x, x0 * x0, x0 * x1, x1 * x1], dim=-1) / nk[..., None]  # [B, K, 5]
    means = moments[..., :2]
    m0, m1 = means[..., 0], means[..., 1]
    c00 = (moments[..., 2] - m0 * m0).clamp_min(0) + reg
    c01 = moments[..., 3] - m0 * m1
    c11 = (moments[..., 4] - m1 * m1).clamp_min(0) + reg
    cov = torch.stack([torch.stack([c00, c01], -1), torch.stack([c01, c11], -1)], -2)
    weights = nk / nk.sum(-1, keepdim=True)
    return weights, means, cov


def _weighted_log_prob(x, weights, means, cov) -> torch.Tensor:
    """``[B, N, K]`` log(w_k N(x | mu_k, Sigma_k)) with closed-form 2x2 inverses."""
    a, bb, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]  # [B, K]
    det = (a * c - bb * bb).clamp_min(1e-300)
    d0 = x[:, :, 0, None] - means[:, None, :, 0]  # [B, N, K]
    d1 = x[:, :, 1, None] - means[:, None, :, 1]
    maha = (d0 * d0 * c[:, None] - 2 * d0 * d1 * bb[:, None] + d1 * d1 * a[:, None]) / det[:, None]
    return -0.5 * maha - 0.5 * torch.log(det)[:, None] - LOG_2PI + torch.log(weights)[:, None]


# ---- quadratic-form EM: log(w N(x | mu, S)) = phi(x) . theta with phi(x) = [x0, x1, x0^2, x0 x1, x1^2, 1]
_MASKED = -1e30  # log-density of unused component slots (exp underflows to exactly 0)


def _features(x: torch.Tensor) -> torch.Tensor:
    """``[B, 6, N]`` = ``[x0, x1, x0^2, x0 x1, x1^2, 1]`` per point: one matmul gives every component's
    log-density (E step) and every responsibility-weighted moment (M step)."""
    x0, x1 = x[..., 0], x[..., 1]
    return torch.stack([x0, x1, x0 * x0, x0 * x1, x1 * x1, torch.ones_like(x0)], dim=1)


def _theta(weights, means, cov, valid) -> torch.Tensor:
    """``[B, 6, K]`` coefficients so that ``features @ theta`` is log(w_k N(x | mu_k, Sigma_k))."""
    a, bb, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]  # [B, K]
    det = (a * c - bb * bb).clamp_min(1e-300)
    p00, p01, p11 = c / det, -bb / det, a / det  # precision matrix
    m0, m1 = means[..., 0], means[..., 1]
    l0, l1 = p00 * m0 + p01 * m1, p01 * m0 + p11 * m1  # P mu
    const = -0.5 * (m0 * l0 + m1 * l1) - 0.5 * torch.log(det) - LOG_2PI + torch.log(weights.clamp_min(1e-300))
    const = torch.where(valid, const, torch.full_like(const, _MASKED))
    return torch.stack([l0, l1, -0.5 * p00, -p01, -0.5 * p11, const], dim=1)


def _m_step_phi(phi: torch.Tensor, resp: torch.Tensor, valid: torch.Tensor, reg: float):
    """M step from responsibilities ``[B, K, N]`` with one matmul over the features ``[B, 6, N]``."""
    eps = 10 * torch.finfo(phi.dtype).eps
    s = resp @ phi.transpose(1, 2)  # [B, K, N] @ [B, N, 6] (features stored [B, 6, N])
    nk = s[..., 5] + eps
    mom = s[..., :5] / nk[..., None]
    m0, m1 = mom[..., 0], mom[..., 1]
    c00 = (mom[..., 2] - m0 * m0).clamp_min(0) + reg
    c01 = mom[..., 3] - m0 * m1
    c11 = (mom[..., 4] - m1 * m1).clamp_min(0) + reg
    cov = torch.stack([torch.stack([c00, c01], -1), torch.stack([c01, c11], -1)], -2)
    nk = torch.where(valid, nk, torch.zeros_like(nk))
    weights = nk / nk.sum(-1, keepdim=True)
    return weights, mom[..., :2], cov


def _em(
    x: torch.Tensor,
    labels: torch.Tensor,
    ks: torch.Tensor,
    reg_covar: float,
    tol: float,
    max_iter: int,
    phi: torch.Tensor | None = None,
):
    """EM for every problem of ``x`` ``[P, N, 2]`` from hard ``labels`` (returns log-densities ``[P, K, N]``); problem ``p`` uses ``ks[p]`` of the
    ``K = max(ks)`` component slots. Each problem stops at its own convergence (its parameters are frozen
    then); finished problems are dropped from the working batch once they are a fifth of it."""
    p_all = x.shape[0]
    kmax = int(ks.max())
    valid = torch.arange(kmax, device=x.device)[None, :] < ks[:, None]  # [P, K]
    # [P, 6, N] / [P, K, N] layouts: wide matmuls and reductions over K as elementwise ops across N (faster
    # on CPU than reductions over a last dimension of 2-4)
    phi = _features(x) if phi is None else phi
    resp = torch.nn.functional.one_hot(labels, kmax).to(x.dtype).transpose(1, 2)
    weights, means, cov = _m_step_phi(phi, resp, valid, reg_covar)
    converged = torch.zeros(p_all, dtype=torch.bool, device=x.device)
    cur = torch.arange(p_all, device=x.device)  # global ids of the working batch
    ph, va, w, mu, cv = phi, valid, weights.clone(), means.clone(), cov.clone()
    lower = torch.full((p_all,), -torch.inf, dtype=x.dtype, device=x.device)
    active = torch.ones(p_all, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        wlp = _theta(w, mu, cv, va).transpose(1, 2) @ ph  # [A, K, N]
        top = wlp.amax(1, keepdim=True)
        e = (wlp - top).exp_()  # one exp gives both the log-likelihood and the responsibilities
        tot = e.sum(1, keepdim=True)
        new_lower = (tot.log() + top).mean((-1, -2))
        w, mu, cv = _m_step_phi(ph, e.div_(tot), va, reg_covar)
        done = active & ((new_lower - lower).abs() < tol)
        lower = new_lower
        active = active & ~done
        if bool(done.any()):
            ids = cur[done]
            weights[ids], means[ids], cov[ids] = w[done], mu[done], cv[done]
            converged[ids] = True
        n_act = int(active.sum())
        if n_act == 0:
            break
        if 5 * n_act <= 4 * len(cur):  # compact (copying is cheaper than iterating finished problems)
            keep = active.nonzero().flatten()
            cur, ph, va, w, mu, cv, lower = (
                cur[keep],
                ph[keep],
                va[keep],
                w[keep],
                mu[keep],
                cv[keep],
                lower[keep],
            )
            active = torch.ones(len(keep), dtype=torch.bool, device=x.device)
    else:
        ids = cur[active]
        weights[ids], means[ids], cov[ids] = w[active], mu[active], cv[active]
    wlp = _theta(weights, means, cov, valid).transpose(1, 2) @ phi  # [P, K, N]
    return weights, means, cov, wlp, converged


def fit_gmm_torch_many(
    points: torch.Tensor,
    ks: list[int] | tuple[int, ...],
    seed: int = 0,
    groups: list[int] | None = None,
    reg_covar: float = REG_COVAR,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
    merge_k: bool | None = None,
) -> list[MixtureFit]:
    """Fit a mixture for every ``k`` in ``ks`` to every point cloud of ``points`` ``[B, N, 2]`` in ONE batch.

    Every cloud of every group is fitted in one batch per ``k`` on the CPU (one k-means, one EM loop; each
    problem stops at its own convergence), and in one batch for all ``k`` on a GPU (unused component slots of
    the smaller ``k`` masked), so the per-iteration cost is paid once per ``k`` or once, not once per cloud
    (``merge_k`` forces either layout; both give the same fits). ``groups`` (sizes summing to ``B``)
    splits the clouds into independently seeded groups (e.g. the layers of a model): group ``g`` and ``k``
    get exactly the k-means++ seeds that ``fit_gmm_torch(points_of_g, k, seed)`` draws.

    Returns:
        one :class:`MixtureFit` per ``k`` (in the order of ``ks``), each with ``k`` components.

    Raises:
        ValueError: ``points`` not ``[B, N, 2]`` or a ``k`` outside ``[1, N-1]``; ``groups`` not summing to ``B``.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("`ks` must hold at least one number of components, got [].")
    for k in ks:
        x = _check_points(points, k)
    b, n, _ = x.shape
    groups = [b] if groups is None else list(groups)
    if sum(groups) != b or any(gs < 0 for gs in groups):
        raise ValueError(f"`groups` must be non-negative sizes summing to B={b}, got {groups!r}.")
    xf = x.float()  # float32 suffices to rank distances
    xs = xf.cpu()  # k-means++ seeds are drawn on the CPU: the same seeds whatever the device
    seeds = []
    for k in ks:
        parts, start = [], 0
        for gs in groups:
            g = torch.Generator(device="cpu").manual_seed(seed)
            parts.append(_kmeanspp_seed(xs[start : start + gs], k, g))
            start += gs
        seeds.append(torch.cat(parts).to(x.device))
    phi = _features(x)
    if x.is_cuda if merge_k is None else merge_k:
        # on a GPU kernel launches dominate: one merged batch over every K (unused component slots masked)
        kmax, nk = max(ks), len(ks)
        padded = [torch.cat([c, c.new_full((b, kmax - k, 2), torch.inf)], dim=1) for k, c in zip(ks, seeds)]
        labels = _lloyd(xf.repeat(nk, 1, 1), torch.cat(padded))
        kvec = torch.tensor(ks, device=x.device).repeat_interleave(b)
        w, mu, cv, wlp, conv = _em(
            x.repeat(nk, 1, 1), labels, kvec, reg_covar, tol, max_iter, phi.repeat(nk, 1, 1)
        )
        per_k = [
            (
                w[j * b : (j + 1) * b, :k],
                mu[j * b : (j + 1) * b, :k],
                cv[j * b : (j + 1) * b, :k],
                wlp[j * b : (j + 1) * b, :k],
                conv[j * b : (j + 1) * b],
            )
            for j, k in enumerate(ks)
        ]
    else:  # one k-means and one EM loop per K: no masked component slots (on a CPU the work dominates)
        per_k = [
            _em(x, _lloyd(xf, c), torch.full((b,), k, device=x.device), reg_covar, tol, max_iter, phi)
            for k, c in zip(ks, seeds)
        ]
    return [
        MixtureFit(w, mu, cv, _argbest_dim1(lp, largest=True), torch.logsumexp(lp, 1), conv)
        for w, mu, cv, lp, conv in per_k
    ]


def fit_gmm_torch(
    points: torch.Tensor,
    k: int,
    seed: int = 0,
    reg_covar: float = REG_COVAR,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> MixtureFit:
    """Fit a ``k``-component full-covariance mixture to every point cloud of ``points`` ``[B, N, 2]`` at once.

    Raises:
        ValueError: ``points`` not ``[B, N, 2]`` or ``k`` outside ``[1, N-1]``.
    """
    return fit_gmm_torch_many(points, [k], seed, reg_covar=reg_covar, tol=tol, max_iter=max_iter)[0]


def _sklearn_one(xb, k: int, seed: int, reg_covar: float, tol: float, max_iter: int):
    import warnings

    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(
            k, covariance_type="full", reg_covar=reg_covar, tol=tol, max_iter=max_iter, random_state=seed
        ).fit(xb)
        return gm.weights_, gm.means_, gm.covariances_, gm.predict(xb), gm.score_samples(xb), gm.converged_


def fit_gmm_sklearn(
    points: torch.Tensor,
    k: int,
    seed: int = 0,
    reg_covar: float = REG_COVAR,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
    n_jobs: int = 1,
) -> MixtureFit:
    """Reference: one ``sklearn.mixture.GaussianMixture`` per point cloud, each under ``threadpool_limits(1)``;
    ``n_jobs > 1`` spreads the filters over joblib worker processes."""
    import numpy as np

    x = _check_points(points, k).cpu().numpy()
    if n_jobs == 1:
        fits = [_sklearn_one(xb, k, seed, reg_covar, tol, max_iter) for xb in x]
    else:
        from joblib import Parallel, delayed

        fits = Parallel(n_jobs=n_jobs)(
            delayed(_sklearn_one)(xb, k, seed, reg_covar, tol, max_iter) for xb in x
        )
    t = [torch.from_numpy(np.stack([np.asarray(f[i]) for f in fits])) for i in range(6)]
    return MixtureFit(t[0], t[1], t[2], t[3].long(), t[4], t[5].bool())


def calinski_harabasz(points: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Calinski-Harabasz index of hard clusterings of every point cloud ``[B, N, D]`` with labels ``[B, N]``.

    Guards for collapsed fits: the index is ``0`` where fewer than two clusters are non-empty, where as many
    clusters as points are used, or where the within-cluster dispersion is zero (scikit-learn raises or
    returns 1.0 there); such fits never win the choice of ``K``. Elsewhere it equals
    ``sklearn.metrics.calinski_harabasz_score``.
    """
    x = points.to(torch.float64)
    n = x.shape[1]
    onehot = torch.nn.functional.one_hot(labels.long(), k).to(x.dtype)  # [B, N, K]
    counts = onehot.sum(1)  # [B, K]
    centres = onehot.transpose(1, 2) @ x / counts.clamp_min(1)[..., None]
    mean = x.mean(1, keepdim=True)
    extra = (counts * (centres - mean).pow(2).sum(-1)).sum(-1)
    assigned = onehot @ centres  # [B, N, D]
    intra = (x - assigned).pow(2).sum((-1, -2))
    used = (counts > 0).sum(-1).to(x.dtype)
    scale = x.pow(2).sum((-1, -2)).clamp_min(1e-300)
    valid = (used >= 2) & (used < n) & (intra > 1e-12 * scale)
    ch = extra * (n - used) / (intra.clamp_min(1e-300) * (used - 1).clamp_min(1))
    return torch.where(valid, ch, torch.zeros_like(ch))


def bic(fit: MixtureFit) -> torch.Tensor:
    """Bayesian information criterion ``[B]`` of 2-D full-covariance fits (lower is better)."""
    b, n = fit.log_prob.shape
    k = fit.weights.shape[-1]
    n_params = k * (2 + 3) + k - 1
    return -2.0 * fit.log_prob.sum(-1) + n_params * math.log(n)
