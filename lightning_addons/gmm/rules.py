"""Anomaly rules: which filters' clusterings isolate outlier samples (pure torch).

Every rule maps a :class:`RuleInput` (one layer's fitted filters) to ``(anomaly [C], flagged [C, N],
score [C])``: the anomaly verdict per filter, the samples each filter flags and a score that ranks filters
(higher is more anomalous). Dead filters are never anomalies. The paper's exact rule is not public: these
three rules and their defaults are our reconstruction (see docs/gmm.md).

Examples:
    >>> import torch
    >>> labels = torch.tensor([[0] * 98 + [1] * 2])
    >>> ri = RuleInput(labels=labels, log_prob=torch.zeros(1, 100), ch=torch.ones(1), k=torch.tensor([2]),
    ...                dead=torch.tensor([False]))
    >>> small_component(ri)[0].tolist()
    [True]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

MAD_SCALE = 1.4826


@dataclass
class RuleInput:
    """One layer's fitted filters: ``labels``/``log_prob`` ``[C, N]``, ``ch``/``k``/``dead`` ``[C]``, and
    optionally ``component_log_prob`` ``[C, N, K]`` (``log w_k N_k(x)``, ``-inf`` for unused ``k``) and
    ``weights`` ``[C, K]`` (0 for unused ``k``) of the chosen fits; ``n_layers``: how many layers the audit
    tests (a rule that controls a family-wise error rate shares its ``alpha`` between them); optionally
    ``signals`` ``[C, N, 2]``: each filter's two principal-component scores divided by the square root of
    the filter's total variance over its ``H*W`` map (so ``signals[f].pow(2).sum() / N`` is the share of the
    filter's variance its 2-D panel holds; zeros for filters not fitted), from which a rule can tell
    independent filters from copies of one signal (:func:`effective_filters`).

    A rule returns ``(anomaly, flagged, score)`` and may add a fourth element, a dict of layer diagnostics:
    ``"effective_filters"`` (float) and ``"inconclusive"`` (why no sample of the layer can be flagged, or
    ``None``), which the audit reports (an inconclusive layer is listed with the skipped layers)."""

    labels: torch.Tensor
    log_prob: torch.Tensor
    ch: torch.Tensor
    k: torch.Tensor
    dead: torch.Tensor
    component_log_prob: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    n_layers: int = 1
    signals: torch.Tensor | None = None


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


def bulk_nll(ri: RuleInput, bulk_tau: float = 0.05) -> torch.Tensor:
    """``[C, N]`` ``-log p(x)`` under each filter's *bulk*: the mixture restricted to the components holding at
    least ``bulk_tau`` of the samples (weights renormalised; the full mixture when no component qualifies,
    when ``bulk_tau`` is 0, or without ``component_log_prob``/``weights`` in the input)."""
    if ri.component_log_prob is None or ri.weights is None or bulk_tau <= 0:
        return -ri.log_prob.to(torch.float64)
    wlp = ri.component_log_prob.to(torch.float64)  # [C, N, K] log(w_k N_k(x)), -inf for unused k
    counts = torch.nn.functional.one_hot(ri.labels.long(), wlp.shape[-1]).sum(1)
    bulk = counts >= bulk_tau * ri.labels.shape[1]  # [C, K]
    bulk = torch.where(bulk.any(-1, keepdim=True), bulk, torch.ones_like(bulk))
    log_bulk = torch.logsumexp(torch.where(bulk[:, None, :], wlp, torch.full_like(wlp, -torch.inf)), -1)
    w_bulk = (ri.weights.to(torch.float64) * bulk).sum(-1, keepdim=True).clamp_min(1e-300)
    return -(log_bulk - torch.log(w_bulk))


def poisson_binomial_tail(p: torch.Tensor) -> torch.Tensor:
    """``[len(p) + 2]``: ``P(X >= t)`` for ``t = 0 .. len(p) + 1`` where ``X`` is a sum of independent
    Bernoulli(``p_i``) (exact, by the usual convolution recursion in float64)."""
    pmf = torch.zeros(len(p) + 1, dtype=torch.float64)
    pmf[0] = 1.0
    for i, pi in enumerate(p.to(torch.float64).cpu().tolist()):
        pmf[1 : i + 2] = pmf[1 : i + 2] * (1 - pi) + pmf[: i + 1] * pi
        pmf[0] *= 1 - pi
    tail = pmf.flip(0).cumsum(0).flip(0).clamp(0, 1)
    return torch.cat([tail, tail.new_zeros(1)])


def effective_filters(signals: torch.Tensor) -> float:
    """Effective number of independent filters among ``C`` whose scaled principal scores are ``signals``
    ``[C, n, 2]`` (see :class:`RuleInput`), in ``[1, C]``.

    The participation ratio ``(tr S)^2 / tr(S^2)`` of the filters' joint covariance ``S`` with every filter
    scaled to unit total variance (the effective number of degrees of freedom of Bretherton et al., 1999;
    ``C`` for uncorrelated filters, 1 when every filter is a copy of one signal). ``tr S = C``;
    ``tr(S^2)`` is estimated from the panels: the variance a filter's 2-D panel does not hold is counted as
    uncorrelated with the other filters and spread over many directions (it adds nothing), which errs towards
    independence; the ``1/n`` chance correlation of independent filters is removed. Computed on an ``n x n``
    Gram matrix (cheap for wide layers).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = torch.randn(1, 300, 2, generator=g).expand(50, 300, 2)  # 50 copies of one signal
        >>> round(effective_filters(s), 2)
        1.0
        >>> effective_filters(torch.randn(50, 300, 2, generator=g) / 2**0.5) > 40  # independent filters
        True
    """
    c, n = signals.shape[:2]
    if c <= 1 or n < 3:
        return float(max(c, 1))
    a = signals.to(torch.float64)
    a = (a - a.mean(1, keepdim=True)) / math.sqrt(n)  # [C, n, 2]: a_f^T a_f = the panel's covariance share
    flat = a.transpose(0, 1).reshape(n, -1)  # [n, 2C]
    gram = flat @ flat.T  # sum_f a_f a_f^T
    sq = float(gram.pow(2).sum())  # tr(S_panels^2) = sum_fg ||a_f^T a_g||_F^2
    cov = torch.einsum("fni,fnj->fij", a, a)  # [C, 2, 2] each panel's covariance
    self_sq = float(cov.pow(2).sum())  # sum_f ||a_f^T a_f||_F^2
    share = cov.diagonal(dim1=-2, dim2=-1).sum(-1)  # [C] variance share of each panel
    chance = (float(share.sum()) ** 2 - float(share.pow(2).sum())) / n  # E sum_{f!=g} under independence
    cross = max(sq - self_sq - chance, 0.0)
    return float(min(max(c * c / max(self_sq + cross, 1e-300), 1.0), c))


def consensus(
    ri: RuleInput,
    z_threshold: float = 12.0,
    alpha: float = 0.01,
    bulk_tau: float = 0.1,
    min_share: float = 0.2,
) -> tuple[torch.Tensor, ...]:
    """Calibrated per layer: a sample is flagged when more of the layer's live filters call it far out than
    independent filters would, at a family-wise error rate ``alpha`` over the audit's samples and layers.

    1. Each live filter *hits* the samples whose robust z-score of ``-log p(x)`` under its bulk density
       (:func:`bulk_nll`) exceeds ``z_threshold``.
    2. The layer's null from its own bulk: ``p_f`` is filter ``f``'s hit rate over the samples that fewer
       than half of the live filters hit (a group that most filters isolate would otherwise inflate the
       rates it is tested against), by Laplace's estimate ``(hits + 1) / (n + 2)`` (a rate measured on
       ``n`` samples is never 0). Under independent filters a sample's hit count is Poisson-binomial with
       the rates ``p_f``; the threshold ``t`` is the smallest count with
       ``P(X >= t) <= alpha / (N * n_layers)`` (Bonferroni over the ``N`` samples and the audited layers),
       and at least ``min_share`` of the live filters. Samples hit by ``t`` or more filters are the layer's
       outliers.

       Filters are not independent: in a layer whose maps carry few independent signals (e.g. VGG's last
       blocks at 32x32 input, where every filter's 2x2 map follows one per-sample activation level), every
       filter hits the same heavy-tailed samples. With ``signals`` in the input the null counts independent
       witnesses: the live filters act as ``m = floor(M_eff)`` independent groups of ``n_live / m`` filters
       (``M_eff``: their :func:`effective_filters` over all audited samples, as the panels were fitted;
       outliers that every filter sees make filters look more alike, so this errs towards fewer flags),
       with the rates at ``m`` evenly spaced quantiles of the ``p_f``. A count of ``t`` filters is
       ``t * m / n_live`` groups: the threshold is ``ceil(t_m * n_live / m)`` for the groups'
       Poisson-binomial threshold ``t_m``. When even all ``m`` groups together are not significant
       (``t_m > m``, e.g. a single signal, whose rate is at least ``1 / (N + 2)``), no sample can be flagged
       in the layer: it is reported as inconclusive, with its ``M_eff``. Independent filters
       (``M_eff >= n_live``) keep the plain Poisson-binomial threshold.
    3. A filter is an anomaly when it hits at least one of those outliers and they are at least half of its
       hits; its flagged samples are the outliers it hits. Score: the share of the samples it flags.

    So the threshold grows with the layer's width and its filters' hit rates: a clean model flags next to
    nothing whatever its size. Defaults: see docs/gmm.md (chosen on seeded runs, stated there).
    """
    c, n = ri.labels.shape
    live = ~ri.dead
    n_live = int(live.sum())
    if c == 0 or n_live == 0:
        zero = torch.zeros(c, dtype=torch.bool, device=ri.labels.device)
        return (
            zero,
            torch.zeros(c, n, dtype=torch.bool, device=ri.labels.device),
            torch.zeros(c, dtype=torch.float64),
        )
    hit = (robust_z(bulk_nll(ri, bulk_tau), dim=-1) > z_threshold) & live[:, None]  # [C, N]
    counts = hit.sum(0)
    bulk = counts < max(2.0, 0.5 * n_live)
    cols = bulk if bool(bulk.any()) else torch.ones_like(bulk)
    # Laplace's rule of succession: a rate estimated from n samples is never 0 (nor a sure hit)
    rates = (hit[live][:, cols].to(torch.float64).sum(1) + 1.0) / (int(cols.sum()) + 2.0)
    level = alpha / (n * max(1, int(ri.n_layers)))
    m_eff = float(n_live)
    if ri.signals is not None:  # all samples: the panels' axes and variance shares are the fitted ones
        m_eff = effective_filters(ri.signals[live])
    groups = max(1, min(n_live, math.floor(m_eff + 1e-9)))
    if groups < n_live:  # m evenly spaced quantiles of the rates stand for the m independent groups
        pos = (torch.arange(groups, dtype=torch.float64) + 0.5) * n_live / groups
        pos = pos.long().clamp(max=n_live - 1)
        rates = rates.sort().values[pos.to(rates.device)]
    tail = poisson_binomial_tail(rates)
    ok = (tail <= level).nonzero().flatten()
    t_groups = int(ok[0]) if len(ok) else len(tail)
    inconclusive = None
    if t_groups > groups:
        inconclusive = (
            f"its {n_live} live filters carry about {m_eff:.0f} independent signal(s) (effective number of "
            "filters): no consensus can reach the significance level"
        )
    t = max(math.ceil(t_groups * n_live / groups - 1e-9), 1, math.ceil(min_share * n_live))
    outliers = counts >= t  # [N]
    flagged = hit & outliers[None, :]
    n_flag, n_hit = flagged.sum(1), hit.sum(1)
    anomaly = (n_flag >= 1) & (2 * n_flag >= n_hit) & live
    flagged = flagged & anomaly[:, None]
    info = {"effective_filters": m_eff, "threshold": t, "inconclusive": inconclusive}
    return anomaly, flagged, flagged.to(torch.float64).mean(1), info


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
    z = robust_z(bulk_nll(ri, bulk_tau), dim=-1)
    flagged = (z > z_threshold) & ~ri.dead[:, None]
    frac = flagged.to(torch.float64).mean(-1)
    return (frac > min_fraction) & ~ri.dead, flagged, frac


def ch_outlier(
    ri: RuleInput, z_threshold: float = 3.5, tau: float = 0.05, min_size: int = 3
) -> tuple[torch.Tensor, ...]:
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
    "consensus": consensus,
    "likelihood": likelihood,
    "small_component": small_component,
    "ch_outlier": ch_outlier,
}
RULE_PARAMS: dict[str, tuple[str, ...]] = {
    "consensus": ("z_threshold", "alpha", "bulk_tau", "min_share"),
    "likelihood": ("z_threshold", "min_fraction", "bulk_tau"),
    "small_component": ("tau", "min_size"),
    "ch_outlier": ("z_threshold", "tau", "min_size"),
}


def get_rule(rule: str | Callable) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Resolve a rule name (``consensus``, ``likelihood``, ``small_component``, ``ch_outlier``) or pass a callable through.

    Raises:
        ValueError: unknown rule name.
    """
    if callable(rule):
        return rule
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)} or a callable, got {rule!r}.")
    return RULES[rule]
