"""Anomaly rules: which filters' clusterings isolate outlier samples (pure torch).

Every rule maps a :class:`RuleInput` (one layer's fitted filters) to ``(anomaly [C], flagged [C, N],
score [C])``: the anomaly verdict per filter, the samples each filter flags and a score that ranks filters
(higher is more anomalous). Dead filters are never anomalies. The paper's exact rule is not public: these
three rules and their defaults are our reconstruction (see docs/gmm.md).

Example:
    >>> import torch
    >>> labels = torch.tensor([[0] * 98 + [1] * 2])
    >>> ri = RuleInput(labels=labels, log_prob=torch.zeros(1, 100), ch=torch.ones(1), k=torch.tensor([2]),
    ...                dead=torch.tensor([False]))
    >>> small_component(ri)[0].tolist()
    [True]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

MAD_SCALE = 1.4826


@dataclass
class RuleInput:
    """One layer's fitted filters: ``labels``/``log_prob`` ``[C, N]``, ``ch``/``k``/``dead`` ``[C]``, and
    optionally ``component_log_prob`` ``[C, N, K]`` (``log w_k N_k(x)``, ``-inf`` for unused ``k``) and
    ``weights`` ``[C, K]`` (0 for unused ``k``) of the chosen fits."""

    labels: torch.Tensor
    log_prob: torch.Tensor
    ch: torch.Tensor
    k: torch.Tensor
    dead: torch.Tensor
    component_log_prob: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def robust_z(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``(x - median) / (1.4826 * MAD)`` along ``dim`` (a robust z-score; MAD floored by ``eps``)."""
    med = x.median(dim=dim, keepdim=True).values
    mad = (x - med).abs().median(dim=dim, keepdim=True).values
    return (x - med) / (MAD_SCALE * mad).clamp_min(eps)


def _component_counts(labels: torch.Tensor, kmax: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), kmax).sum(1)  # [C, K]


def small_component(ri: RuleInput, tau: float = 0.05, min_size: int = 3) -> tuple[torch.Tensor, ...]:
    """A filter is an anomaly when a non-empty component holds fewer than ``max(min_size, tau * N)`` samples;
    its members are the flagged samples. Score: ``1 -`` the smallest non-empty component fraction."""
    c, n = ri.labels.shape
    kmax = int(ri.k.max()) if c else 1
    counts = _component_counts(ri.labels, max(kmax, 1))
    limit = max(float(min_size), tau * n)
    small = (counts > 0) & (counts < limit)  # [C, K]
    flagged = torch.gather(small, 1, ri.labels.long()) & ~ri.dead[:, None]
    anomaly = small.any(-1) & ~ri.dead
    smallest = torch.where(counts > 0, counts, torch.full_like(counts, n)).min(-1).values
    return anomaly, flagged, 1.0 - smallest.to(torch.float64) / n


def likelihood(
    ri: RuleInput, z_threshold: float = 8.0, min_fraction: float = 0.02, bulk_tau: float = 0.05
) -> tuple[torch.Tensor, ...]:
    """Samples whose robust z-score of ``-log p(x)`` exceeds ``z_threshold`` are flagged; the filter is an
    anomaly when more than ``min_fraction`` of its samples are flagged. Score: the flagged fraction.

    ``p`` is the density of the filter's *bulk*: the mixture restricted to components holding at least
    ``bulk_tau`` of the samples (weights renormalised). A mixture with K >= 2 readily spends a component on a
    tight group of outliers, which then have a high density under the full mixture; under the bulk they are
    far out. Without ``component_log_prob`` in the input (or with ``bulk_tau=0``) the full mixture is used.
    """
    nlp = -ri.log_prob.to(torch.float64)
    if ri.component_log_prob is not None and ri.weights is not None and bulk_tau > 0:
        wlp = ri.component_log_prob.to(torch.float64)  # [C, N, K] log(w_k N_k(x)), -inf for unused k
        counts = torch.nn.functional.one_hot(ri.labels.long(), wlp.shape[-1]).sum(1)
        bulk = counts >= bulk_tau * ri.labels.shape[1]  # [C, K]
        bulk = torch.where(bulk.any(-1, keepdim=True), bulk, torch.ones_like(bulk))
        neg = torch.full_like(wlp, -torch.inf)
        log_bulk = torch.logsumexp(torch.where(bulk[:, None, :], wlp, neg), -1)
        w_bulk = (ri.weights.to(torch.float64) * bulk).sum(-1, keepdim=True).clamp_min(1e-300)
        nlp = -(log_bulk - torch.log(w_bulk))
    z = robust_z(nlp, dim=-1)
    flagged = (z > z_threshold) & ~ri.dead[:, None]
    frac = flagged.to(torch.float64).mean(-1)
    return (frac > min_fraction) & ~ri.dead, flagged, frac


def ch_outlier(ri: RuleInput, z_threshold: float = 3.5, tau: float = 0.05, min_size: int = 3) -> tuple[torch.Tensor, ...]:
    """A filter is an anomaly when its CH index is a robust outlier among the layer's live filters (robust
    z-score of ``log(1 + CH)`` above ``z_threshold``; the log because CH is a ratio with a multiplicative spread); its flagged samples are the members of its smallest component when that holds
    fewer than half the samples. Score: the CH z-score."""
    live = ~ri.dead
    z = torch.zeros_like(ri.ch, dtype=torch.float64)
    if int(live.sum()) >= 3:
        z[live] = robust_z(torch.log1p(ri.ch[live].to(torch.float64).clamp_min(0)))
    anomaly = (z > z_threshold) & live
    c, n = ri.labels.shape
    counts = _component_counts(ri.labels, max(int(ri.k.max()) if c else 1, 1))
    masked = torch.where(counts > 0, counts, torch.full_like(counts, n + 1))
    smallest = masked.argmin(-1)
    in_smallest = ri.labels == smallest[:, None]
    small_enough = (masked.min(-1).values < n / 2)[:, None]
    flagged = in_smallest & small_enough & anomaly[:, None]
    return anomaly, flagged, z


RULES: dict[str, Callable[..., tuple[torch.Tensor, ...]]] = {
    "likelihood": likelihood,
    "small_component": small_component,
    "ch_outlier": ch_outlier,
}
RULE_PARAMS: dict[str, tuple[str, ...]] = {
    "likelihood": ("z_threshold", "min_fraction", "bulk_tau"),
    "small_component": ("tau", "min_size"),
    "ch_outlier": ("z_threshold", "tau", "min_size"),
}


def get_rule(rule: str | Callable) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Resolve a rule name (``likelihood``, ``small_component``, ``ch_outlier``) or pass a callable through.

    Raises:
        ValueError: unknown rule name.
    """
    if callable(rule):
        return rule
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)} or a callable, got {rule!r}.")
    return RULES[rule]
