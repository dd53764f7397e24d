"""Batched PCA of per-filter feature matrices to two dimensions (pure torch).

Examples:
    >>> import torch
    >>> x = torch.randn(3, 50, 20, generator=torch.Generator().manual_seed(0))
    >>> project_2d(x).shape
    torch.Size([3, 50, 2])
"""

from __future__ import annotations

import torch


def project_2d(
    x: torch.Tensor,
    n_components: int = 2,
    oversample: int = 6,
    niter: int = 4,
    seed: int = 0,
    centred: bool = False,
    method: str = "auto",
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
        method: orthonormalisation of the thin panels: ``"qr"`` (Householder QR, then an SVD of the small
            projected matrix), ``"gram"`` (eigendecompositions of the ``q x q`` Gram matrices: one batched
            kernel on a GPU, where batched QR and SVD of many small matrices are slow loops) or ``"auto"``
            (``"gram"`` on CUDA tensors, ``"qr"`` elsewhere).

    Returns:
        ``[B, N, n_components]`` scores (zeros beyond the rank of the data).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"`x` must be [B, N, D] or [N, D], got shape {tuple(x.shape)}.")
    if method not in ("auto", "qr", "gram"):
        raise ValueError(f"`method` must be one of ['auto', 'qr', 'gram'], got {method!r}.")
    gram = method == "gram" or (method == "auto" and x.is_cuda)
    orth = _orthonormalise if gram else (lambda y: torch.linalg.qr(y)[0])
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
        qm = orth((omega.t() @ xt).transpose(1, 2))  # orth(Xc @ Omega)
        for _ in range(niter):
            z = orth((qm.transpose(1, 2) @ xc).transpose(1, 2))  # orth(Xc^T Q)
            qm = orth((z.transpose(1, 2) @ xt).transpose(1, 2))  # orth(Xc Z)
        small = qm.transpose(1, 2) @ xc  # [B, q, D] = Ub S Vb^T
        if gram:  # small small^T = Ub S^2 Ub^T (eigenvalues ascending)
            lam, ub = _small_eigh((small @ small.transpose(1, 2)).double())
            s, ub = lam.flip(-1).clamp_min(0).sqrt().to(x.dtype), ub.flip(-1).to(x.dtype)
        else:
            ub, s, _ = torch.linalg.svd(small, full_matrices=False)
        u = qm @ ub
    k = min(n_components, s.shape[-1])
    scores = u[..., :k] * s[..., None, :k]
    if k < n_components:
        scores = torch.cat([scores, scores.new_zeros(b, n, n_components - k)], dim=-1)
    return scores[0] if squeeze else scores


def _small_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of tiny ``q x q`` matrices, on the CPU: a copy of a few KB each way
    instead of cuSOLVER (whose one-off initialisation alone costs more than a whole audit's eigenproblems)."""
    lam, v = torch.linalg.eigh(m.cpu())
    return lam.to(m.device), v.to(m.device)


def _orthonormalise(y: torch.Tensor, rel_tol: float = 1e-10) -> torch.Tensor:
    """Orthonormal basis ``[B, N, q]`` of the columns of thin ``y`` by two passes of Gram-eigen
    orthonormalisation (``Q = Y V diag(lambda)^-1/2`` from ``Y^T Y = V diag(lambda) V^T``, in float64).

    Replaces ``torch.linalg.qr`` for the thin panels of the subspace iteration: the batched ``q x q``
    eigenproblems run as one batched kernel on a GPU, where batched QR of tall matrices is a slow loop.
    Directions with ``lambda <= rel_tol * lambda_max`` (rank-deficient panels) become zero columns."""
    q = y.double()
    for _ in range(2):  # the second pass restores orthogonality to working precision
        lam, v = _small_eigh(q.transpose(1, 2) @ q)
        keep = lam > rel_tol * lam[..., -1:].clamp_min(1e-300)
        scale = torch.where(keep, lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam))
        q = q @ (v * scale[:, None, :])
    return q.to(y.dtype)


def normalise_scale(points: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each point cloud ``[B, N, 2]`` by its RMS distance to the centre (isotropic: shapes are kept)."""
    centred = points - points.mean(dim=-2, keepdim=True)
    scale = centred.pow(2).sum(-1).mean(-1).sqrt().clamp_min(eps)
    return centred / scale[..., None, None]
