"""Gaussian mixtures on 2-D point clouds, one per filter: a batched EM in torch and a scikit-learn loop.

Both backends fit full-covariance mixtures initialised by k-means (like scikit-learn's default), with
``reg_covar=1e-6``, ``tol=1e-3`` and ``max_iter=100``, and return the same :class:`MixtureFit`. The torch
backend fits every filter of a layer at once (closed-form 2x2 inverses, per-problem convergence); the
scikit-learn backend is the reference it is tested against.

Example:
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
    return (x[:, :, None, :] - c[:, None, :, :]).pow(2).sum(-1)


def kmeans_batched(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 50) -> torch.Tensor:
    """Greedy k-means++ seeding then Lloyd iterations for every problem of a batch; returns labels ``[B, N]``."""
    b, n, _ = x.shape
    ar = torch.arange(b)
    first = torch.randint(0, n, (b,), generator=generator)
    centres = x[ar, first][:, None, :]  # [B, 1, 2]
    closest = _sqdist(x, centres)[..., 0]
    trials = 2 + int(math.log(k))
    for _ in range(1, k):
        probs = closest.clamp_min(0) + 1e-300
        cand = torch.multinomial(probs / probs.sum(-1, keepdim=True), trials, replacement=True, generator=generator)
        cand_pts = torch.gather(x, 1, cand[..., None].expand(b, trials, 2))  # [B, T, 2]
        d_cand = _sqdist(x, cand_pts)  # [B, N, T]
        pot = torch.minimum(closest[..., None], d_cand).sum(1)  # [B, T]
        best = pot.argmin(-1)
        centres = torch.cat([centres, cand_pts[ar, best][:, None, :]], dim=1)
        closest = torch.minimum(closest, d_cand[ar, :, best])
    labels = _sqdist(x, centres).argmin(-1)
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # [B, N, K]
        counts = onehot.sum(1)  # [B, K]
        sums = onehot.transpose(1, 2) @ x  # [B, K, 2]
        new_c = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
        new_labels = _sqdist(x, new_c).argmin(-1)
        centres = new_c
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg: float):
    eps = 10 * torch.finfo(x.dtype).eps
    nk = resp.sum(1) + eps  # [B, K]
    means = resp.transpose(1, 2) @ x / nk[..., None]  # [B, K, 2]
    diff = x[:, None, :, :] - means[:, :, None, :]  # [B, K, N, 2]
    w = resp.transpose(1, 2)[..., None]  # [B, K, N, 1]
    cov = (w * diff).transpose(-1, -2) @ diff / nk[..., None, None]
    cov = cov + reg * torch.eye(2, dtype=x.dtype)
    weights = nk / nk.sum(-1, keepdim=True)
    return weights, means, cov


def _weighted_log_prob(x, weights, means, cov) -> torch.Tensor:
    """``[B, N, K]`` log(w_k N(x | mu_k, Sigma_k)) with closed-form 2x2 inverses."""
    a, bb, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]  # [B, K]
    det = (a * c - bb * bb).clamp_min(1e-300)
    d = x[:, :, None, :] - means[:, None, :, :]  # [B, N, K, 2]
    d0, d1 = d[..., 0], d[..., 1]
    maha = (d0 * d0 * c[:, None] - 2 * d0 * d1 * bb[:, None] + d1 * d1 * a[:, None]) / det[:, None]
    return -0.5 * maha - 0.5 * torch.log(det)[:, None] - LOG_2PI + torch.log(weights)[:, None]


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
    x = _check_points(points, k)
    g = torch.Generator(device="cpu").manual_seed(seed)
    labels = kmeans_batched(x.cpu(), k, g).to(x.device)
    resp = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    weights, means, cov = _m_step(x, resp, reg_covar)
    lower = torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device)
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        wlp = _weighted_log_prob(x, weights, means, cov)
        lpn = torch.logsumexp(wlp, dim=-1)  # [B, N]
        new_lower = lpn.mean(-1)
        active = ~converged
        resp = torch.exp(wlp - lpn[..., None])
        w2, m2, c2 = _m_step(x, resp, reg_covar)
        weights = torch.where(active[:, None], w2, weights)
        means = torch.where(active[:, None, None], m2, means)
        cov = torch.where(active[:, None, None, None], c2, cov)
        change = (new_lower - lower).abs()
        lower = torch.where(active, new_lower, lower)
        converged = converged | (change < tol)
        if bool(converged.all()):
            break
    wlp = _weighted_log_prob(x, weights, means, cov)
    return MixtureFit(weights, means, cov, wlp.argmax(-1), torch.logsumexp(wlp, -1), converged)


def fit_gmm_sklearn(
    points: torch.Tensor,
    k: int,
    seed: int = 0,
    reg_covar: float = REG_COVAR,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> MixtureFit:
    """Reference: one ``sklearn.mixture.GaussianMixture`` per point cloud, under ``threadpool_limits(1)``."""
    import numpy as np
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    x = _check_points(points, k).cpu().numpy()
    out = {key: [] for key in ("w", "m", "c", "l", "p", "v")}
    with threadpool_limits(1):
        for xb in x:
            gm = GaussianMixture(k, covariance_type="full", reg_covar=reg_covar, tol=tol, max_iter=max_iter,
                                 random_state=seed)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm.fit(xb)
            out["w"].append(gm.weights_)
            out["m"].append(gm.means_)
            out["c"].append(gm.covariances_)
            out["l"].append(gm.predict(xb))
            out["p"].append(gm.score_samples(xb))
            out["v"].append(gm.converged_)
    t = {key: torch.from_numpy(np.stack(v)) for key, v in out.items()}
    return MixtureFit(t["w"], t["m"], t["c"], t["l"].long(), t["p"], t["v"].bool())


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
