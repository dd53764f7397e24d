"""Batched PCA of per-filter feature matrices to two dimensions (pure torch).

Example:
    >>> import torch
    >>> x = torch.randn(3, 50, 20, generator=torch.Generator().manual_seed(0))
    >>> project_2d(x).shape
    torch.Size([3, 50, 2])
"""

from __future__ import annotations

import torch


def project_2d(
    x: torch.Tensor, n_components: int = 2, oversample: int = 6, niter: int = 4, seed: int = 0, centred: bool = False
) -> torch.Tensor:
    """Principal-component scores of each matrix in a batch.

    Centres each ``[N, D]`` matrix over its samples and returns the scores on the top ``n_components``
    principal axes, computed by seeded randomized subspace iteration (Halko et al., Alg. 4.4) followed by an
    exact SVD of the small projected matrix; with ``D <= n_components + oversample`` the exact SVD is used.
    Signs of the axes are arbitrary (as in any PCA).

    Args:
        x: ``[B, N, D]`` (or ``[N, D]``) float tensor: ``B`` filters, ``N`` samples, ``D`` flattened map size.
        n_components: number of principal components.
        oversample: extra columns of the random subspace.
        niter: power iterations (more is more exact on slowly decaying spectra).
        seed: seed of the random start.
        centred: ``x`` is already centred over its samples (skips a pass over the data).

    Returns:
        ``[B, N, n_components]`` scores (zeros beyond the rank of the data).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"`x` must be [B, N, D] or [N, D], got shape {tuple(x.shape)}.")
    b, n, d = x.shape
    xc = x if centred else x - x.mean(dim=1, keepdim=True)
    q = n_components + oversample
    if min(n, d) <= q:
        u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        omega = torch.randn(d, q, generator=g, dtype=x.dtype).to(x.device)
        xt = xc.transpose(1, 2)
        # thin products as (small^T @ Xc^T)^T: BLAS runs [q, D] x [D, N] ~3x faster than [N, D] x [D, q]
        qm, _ = torch.linalg.qr((omega.t() @ xt).transpose(1, 2))  # orth(Xc @ Omega)
        for _ in range(niter):
            z, _ = torch.linalg.qr((qm.transpose(1, 2) @ xc).transpose(1, 2))  # orth(Xc^T Q)
            qm, _ = torch.linalg.qr((z.transpose(1, 2) @ xt).transpose(1, 2))  # orth(Xc Z)
        small = qm.transpose(1, 2) @ xc  # [B, q, D]
        ub, s, _ = torch.linalg.svd(small, full_matrices=False)
        u = qm @ ub
    k = min(n_components, s.shape[-1])
    scores = u[..., :k] * s[..., None, :k]
    if k < n_components:
        scores = torch.cat([scores, scores.new_zeros(b, n, n_components - k)], dim=-1)
    return scores[0] if squeeze else scores


def normalise_scale(points: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each point cloud ``[B, N, 2]`` by its RMS distance to the centre (isotropic: shapes are kept)."""
    centred = points - points.mean(dim=-2, keepdim=True)
    scale = centred.pow(2).sum(-1).mean(-1).sqrt().clamp_min(eps)
    return centred / scale[..., None, None]
