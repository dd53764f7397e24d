"""One audit of one layer: per-filter PCA to 2-D, Gaussian mixtures over a range of K, the choice of K,
CH index, dead filters and anomaly verdicts (pure torch / scikit-learn, no Lightning).

Examples:
    >>> import torch
    >>> maps = torch.randn(64, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    >>> maps[:, 0] = 0.0  # a dead filter
    >>> res = audit_layer(maps, components=[2, 3])
    >>> res.dead.tolist(), res.k.shape
    ([True, False, False, False], torch.Size([4]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lightning_addons.gmm.mixture import (
    MixtureFit,
    _weighted_log_prob,
    bic,
    calinski_harabasz,
    fit_gmm_sklearn,
    fit_gmm_torch,
    fit_gmm_torch_many,
)
from lightning_addons.gmm.pca import normalise_scale, project_2d
from lightning_addons.gmm.rules import RuleInput, get_rule

BACKENDS = ("torch", "sklearn")
CRITERIA = ("ch", "bic")
MIN_MAP_SIZE = 2  # H*W below this: every flattened map is a scalar, its PCA "2-D" panel has rank 1
RANK_TOL = 1e-8  # variance of PC2 / variance of PC1 below this: rank-1 panel
MAX_DEGENERATE_SHARE = 0.5  # more live filters with rank-1 panels than this: the layer is skipped


def auditability(shape: tuple[int, ...] | torch.Size) -> str | None:
    """Why maps of ``shape`` ``[N, C, H, W]`` cannot be audited (``None`` when they can): 2-D PCA needs maps
    of at least two pixels (a ResNet's last stage at 32x32 input gives 1x1 maps)."""
    h, w = shape[-2], shape[-1]
    if h * w < MIN_MAP_SIZE:
        return f"{h}x{w} maps: the 2-D PCA panel has rank 1 (raise the input size or audit an earlier layer)"
    return None


def panel_rank_deficient(points: torch.Tensor, tol: float = RANK_TOL) -> torch.Tensor:
    """``[B]``: 2-D PCA point clouds ``[B, N, 2]`` whose second component carries (numerically) no variance."""
    var = (points - points.mean(-2, keepdim=True)).double().pow(2).sum(-2)  # [B, 2]
    return var[:, 1] <= tol * var[:, 0].clamp_min(1e-300)


@dataclass
class LayerAudit:
    """Per-filter results of one layer (``C`` filters, ``N`` samples).

    Attributes:
        k: chosen number of components ``[C]`` (0 for dead filters).
        ch: CH index of the chosen fit ``[C]`` (0 for dead or collapsed fits).
        ch_all, bic_all: CH index and BIC for every candidate K ``[C, len(components)]``.
        min_fraction: smallest non-empty component's share of the samples ``[C]``.
        dead: constant feature map over the samples ``[C]``.
        anomaly: the rule's verdict ``[C]``; flagged: samples flagged per filter ``[C, N]``.
        score: the rule's anomaly score ``[C]`` (higher is more anomalous).
        points: the 2-D PCA points ``[C, N, 2]``; weights/means/covariances of the chosen fits (for plots).
        degenerate: live filters whose 2-D PCA panel has rank < 2 (e.g. 1x1 maps) ``[C]``: not fitted, never
            anomalies.
        skipped: why the whole layer was not audited (``None`` when it was), see :func:`auditability`.
        effective_filters: the rule's effective number of independent filters (``None`` when the rule does
            not report one), see :func:`~lightning_addons.gmm.rules.effective_filters`.
        inconclusive: why the rule can flag no sample in this layer although it was fitted (``None``
            otherwise), e.g. filters that all carry one signal.
    """

    k: torch.Tensor
    ch: torch.Tensor
    ch_all: torch.Tensor
    bic_all: torch.Tensor
    min_fraction: torch.Tensor
    dead: torch.Tensor
    anomaly: torch.Tensor
    flagged: torch.Tensor
    score: torch.Tensor
    points: torch.Tensor
    weights: list[torch.Tensor] = field(default_factory=list)
    means: list[torch.Tensor] = field(default_factory=list)
    covariances: list[torch.Tensor] = field(default_factory=list)
    degenerate: torch.Tensor | None = None
    skipped: str | None = None
    effective_filters: float | None = None
    inconclusive: str | None = None


def filter_matrix(maps: torch.Tensor) -> torch.Tensor:
    """Feature maps ``[N, C, H, W]`` -> per-filter sample matrices ``[C, N, H*W]`` (float32).

    Raises:
        ValueError: ``maps`` is not 4-D (not the output of a 2-D convolution).
    """
    if maps.dim() != 4:
        raise ValueError(
            f"Feature maps must be [N, C, H, W] (output of an nn.Conv2d on image batches), got shape {tuple(maps.shape)}."
        )
    n, c = maps.shape[:2]
    return maps.detach().float().reshape(n, c, -1).transpose(0, 1).contiguous()


def dead_filters(
    mats: torch.Tensor,
    rel_tol: float = 1e-8,
    centred: torch.Tensor | None = None,
    energy: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[C]``: filters whose map is (numerically) the same for every sample (e.g. a ReLU that never fires).

    ``centred`` may pass ``mats`` already centred over the samples (saves a pass over the data); ``energy``
    the squared norms ``[C]`` of the uncentred ``mats`` (then ``mats`` itself is not read: it may have been
    centred in place)."""
    x = mats.float()
    xc = centred if centred is not None else x - x.mean(1, keepdim=True)
    var = torch.linalg.vector_norm(xc, dim=(-1, -2)).double() ** 2
    if energy is None:
        energy = _energy(x)
    return var <= rel_tol * energy + 1e-20 * x.shape[1] * x.shape[2]


def _energy(mats: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(mats, dim=(-1, -2)).double() ** 2


def validate_components(components: Sequence[int], n_samples: int | None = None) -> list[int]:
    """Check the candidate numbers of components: distinct integers >= 2 (and < ``n_samples``).

    Raises:
        ValueError: empty, non-integer, below 2, duplicated or not below the number of samples.
    """
    comps = list(components) if isinstance(components, (list, tuple)) else None
    if not comps or any(not isinstance(k, int) or isinstance(k, bool) or k < 2 for k in comps):
        raise ValueError(
            f"`components` must be a non-empty list of integers >= 2, e.g. [2, 3, 4], got {components!r}."
        )
    if len(set(comps)) != len(comps):
        raise ValueError(f"`components` must not repeat values, got {components!r}.")
    if n_samples is not None and max(comps) >= n_samples:
        raise ValueError(
            f"`components` must be below the number of audited samples ({n_samples}), got {components!r}: "
            "lower the K range or raise `max_samples`."
        )
    return sorted(comps)


def _fit(points, k, backend, seed, n_jobs=1):
    if backend == "torch":
        return fit_gmm_torch(points, k, seed=seed)
    return fit_gmm_sklearn(points, k, seed=seed, n_jobs=n_jobs)


def _project(mats: torch.Tensor, backend: str, seed: int, centred: bool = False) -> torch.Tensor:
    if backend == "torch":
        return project_2d(mats.float(), seed=seed, centred=centred).double()
    import numpy as np
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(1):
        for m in mats.to(torch.float64).cpu().numpy():
            p = PCA(n_components=min(2, *m.shape), random_state=seed).fit_transform(m)
            if p.shape[1] < 2:
                p = np.concatenate([p, np.zeros((len(p), 2 - p.shape[1]))], axis=1)
            out.append(p)
    return torch.from_numpy(np.stack(out))


def audit_layer(
    maps: torch.Tensor,
    components: Sequence[int] = (2, 3, 4),
    criterion: Literal["ch", "bic"] = "ch",
    rule: str | Callable = "consensus",
    rule_kwargs: dict[str, Any] | None = None,
    backend: Literal["torch", "sklearn"] = "torch",
    seed: int = 0,
    n_jobs: int = 1,
) -> LayerAudit:
    """Audit every filter of one layer from its feature maps ``[N, C, H, W]``.

    Per live filter: PCA of the ``N`` flattened maps to 2-D (scaled to unit RMS radius), one Gaussian mixture
    per ``K`` in ``components``, ``K`` chosen by the largest CH index (``criterion="ch"``) or the smallest BIC,
    then the anomaly ``rule`` on the chosen fits. Dead filters are skipped. ``n_jobs`` spreads the
    scikit-learn backend's per-filter fits over joblib workers.

    Raises:
        ValueError: bad ``maps`` shape, ``components``, ``criterion`` or ``backend``; unknown rule.
    """
    return audit_layers({"layer": maps}, components, criterion, rule, rule_kwargs, backend, seed, n_jobs)[
        "layer"
    ]


def audit_layers(
    maps: dict[str, torch.Tensor],
    components: Sequence[int] = (2, 3, 4),
    criterion: Literal["ch", "bic"] = "ch",
    rule: str | Callable = "consensus",
    rule_kwargs: dict[str, Any] | None = None,
    backend: Literal["torch", "sklearn"] = "torch",
    seed: int = 0,
    n_jobs: int = 1,
    release: bool = False,
) -> dict[str, LayerAudit]:
    """Audit several layers (feature maps ``[N, C, H, W]`` each, same ``N``) with the same settings.

    Gives per layer exactly what :func:`audit_layer` gives; the torch backend fits the mixtures of every
    live filter of every layer and every ``K`` in one batch (each layer seeded as if fitted alone), so the
    fixed per-iteration cost of EM is paid once per audit instead of once per layer and ``K``.

    ``release=True`` (for a caller that owns the maps, such as the auditor's capture) pops each layer from
    ``maps`` once it is projected to 2-D and centres it in place: no copy of a layer's maps is made, and
    the maps are freed before the mixtures are fitted, so the audit's memory stays close to the maps' size.
    The verdicts are the same as with ``release=False``; ``maps`` is empty afterwards.

    Raises:
        ValueError: as :func:`audit_layer`; layers with different numbers of samples.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {list(CRITERIA)}, got {criterion!r}.")
    rule_fn = get_rule(rule)
    comps = validate_components(components)
    names_in = list(maps)
    ns = sorted({int(m.shape[0]) for m in maps.values()})
    if len(ns) > 1:
        raise ValueError(f"`maps` must hold the same number of samples for every layer, got {ns}.")
    prepared = {}
    for name in names_in:
        m = maps.pop(name) if release else maps[name]
        shape = tuple(m.shape)
        mats = filter_matrix(m)
        del m
        c, n, _ = mats.shape
        comps = validate_components(components, n)
        energy = _energy(mats)
        mean = mats.mean(1, keepdim=True)
        mats_c = mats.sub_(mean) if release and backend == "torch" else mats - mean
        del mean
        dead = dead_filters(mats_c, centred=mats_c, energy=energy)
        total_var = torch.linalg.vector_norm(mats_c, dim=(-1, -2)).double() ** 2 / n  # [C] per sample
        degenerate = torch.zeros(c, dtype=torch.bool)
        live = (~dead).nonzero().flatten()
        skipped = auditability(shape)
        pts = signals = None
        if len(live) and skipped is None:
            if backend == "torch":
                src = mats_c if len(live) == c else mats_c[live]
                raw = _project(src, backend, seed, centred=True)  # fitted on the maps' device
            else:
                raw = _project(mats[live], backend, seed).cpu()
            flat = panel_rank_deficient(raw).cpu()
            if int(flat.sum()) > MAX_DEGENERATE_SHARE * len(live):
                skipped = f"rank-1 PCA panels in {int(flat.sum())} of {len(live)} live filters"
            else:
                degenerate[live[flat.to(live.device)].cpu()] = True
                keep = (~flat).nonzero().flatten()
                live = live[keep.to(live.device)]
                kept = raw if len(keep) == len(flat) else raw[keep.to(raw.device)]
                pts = normalise_scale(kept) if len(keep) else None
                if pts is not None:  # scores per unit of the filter's total variance (RuleInput.signals)
                    scale = total_var[live.to(total_var.device)].to(kept.device).sqrt().clamp_min(1e-300)
                    signals = (kept / scale[:, None, None]).float()
                del kept
        if skipped is not None:
            live, pts, signals = live[:0], None, None
            degenerate = ~dead.cpu()
        prepared[name] = (c, n, dead.cpu(), live.cpu(), pts, degenerate, skipped, signals)
        del mats, mats_c, total_var
    n_layers = sum(v[4] is not None for v in prepared.values())
    done: dict[str, LayerAudit] = {}

    def finish(name: str, fits: list | None) -> None:  # verdicts of a layer as soon as its fits exist
        done[name] = _finish_layer(
            *prepared.pop(name), fits, comps, criterion, rule_fn, rule_kwargs, n_layers
        )

    if backend == "torch":
        names = [k for k, v in prepared.items() if v[4] is not None]
        for chunk in _chunks(
            names, [len(prepared[k][4]) for k in names], n, on_cpu=not _on_cuda(prepared, names)
        ):
            allp = torch.cat([prepared[k][4] for k in chunk])
            many = fit_gmm_torch_many(allp, comps, seed=seed, groups=[len(prepared[k][4]) for k in chunk])
            del allp
            start = 0
            for k in chunk:
                b = len(prepared[k][4])
                finish(k, [_slice_fit(f, start, start + b) for f in many])
                start += b
            del many  # one chunk's fits at a time
    else:
        for k in names_in:
            if prepared[k][4] is not None:
                finish(k, [_fit(prepared[k][4], kk, backend, seed, n_jobs) for kk in comps])
    for k in names_in:
        if k not in done:
            finish(k, None)
    return {name: done[name] for name in names_in}


# CPU: filters x samples per batched fit. It bounds the EM's float64 work arrays (about 20 doubles per
# filter-sample: ~20 MB at 2**17) while each batch stays large enough that per-iteration overheads are small.
EM_CHUNK_ELEMENTS = 2**17


def _on_cuda(prepared: dict, names: list[str]) -> bool:
    return bool(names) and prepared[names[0]][4].is_cuda


def _chunks(names: list[str], sizes: list[int], n: int, on_cpu: bool) -> list[list[str]]:
    """Whole layers per batched fit: on the CPU at most ``EM_CHUNK_ELEMENTS`` filter-samples per batch (one
    layer at least), so the EM's work arrays stay a small multiple of one layer's points, whatever the model's
    size; on a GPU one batch (kernel launches dominate). Each layer is seeded alone, so the fits are the same."""
    if not on_cpu:
        return [names] if names else []
    out: list[list[str]] = []
    cur, used = [], 0
    for name, size in zip(names, sizes):
        if cur and used + size * n > EM_CHUNK_ELEMENTS:
            out.append(cur)
            cur, used = [], 0
        cur.append(name)
        used += size * n
    if cur:
        out.append(cur)
    return out


def _slice_fit(f: MixtureFit, a: int, b: int) -> MixtureFit:
    return MixtureFit(
        f.weights[a:b], f.means[a:b], f.covariances[a:b], f.labels[a:b], f.log_prob[a:b], f.converged[a:b]
    )


def _finish_layer(
    c,
    n,
    dead,
    live,
    pts,
    degenerate,
    skipped,
    signals,
    fits,
    comps,
    criterion,
    rule_fn,
    rule_kwargs,
    n_layers=1,
) -> LayerAudit:
    """Choose K, apply the rule and assemble the layer's verdicts on the fits' device (vectorised: no per-filter
    transfer on a GPU); the result is moved to the CPU once."""
    dev = pts.device if pts is not None else torch.device("cpu")
    dead, live = dead.to(dev), live.to(dev)
    unfitted = dead | degenerate.to(dev)  # dead, rank-1 panels or a skipped layer: never anomalies
    f64 = dict(dtype=torch.float64, device=dev)
    nk = len(comps)
    ch_all = torch.zeros(c, nk, **f64)
    bic_all = torch.full((c, nk), torch.inf, **f64)
    labels = torch.zeros(c, n, dtype=torch.long, device=dev)
    log_prob = torch.zeros(c, n, **f64)
    kmax = max(comps)
    comp_lp = torch.full((c, n, kmax), -torch.inf, **f64)
    w_pad = torch.zeros(c, kmax, **f64)
    mu_pad = torch.zeros(c, kmax, 2, **f64)
    cv_pad = torch.zeros(c, kmax, 2, 2, **f64)
    points = torch.zeros(c, n, 2, **f64)
    sig = torch.zeros(c, n, 2, dtype=torch.float32, device=dev)
    k_chosen = torch.zeros(c, dtype=torch.long, device=dev)
    if len(live):
        points[live] = pts
        if signals is not None:
            sig[live] = signals.to(dev)
        for j, (k, fit) in enumerate(zip(comps, fits)):
            ch_all[live, j] = calinski_harabasz(pts, fit.labels, k)
            bic_all[live, j] = bic(fit)
        if criterion == "ch":
            best = ch_all[live].argmax(-1)  # ties (e.g. all collapsed) -> the smallest K
        else:
            best = bic_all[live].argmin(-1)
        for j, fit in enumerate(fits):
            rows = (best == j).nonzero().flatten()
            if len(rows) == 0:
                continue
            fis = live[rows]
            kk = comps[j]
            labels[fis] = fit.labels[rows]
            log_prob[fis] = fit.log_prob[rows].double()
            k_chosen[fis] = kk
            w, mu, cv = fit.weights[rows].double(), fit.means[rows].double(), fit.covariances[rows].double()
            comp_lp[fis, :, :kk] = _weighted_log_prob(pts[rows], w, mu, cv)
            w_pad[fis, :kk], mu_pad[fis, :kk], cv_pad[fis, :kk] = w, mu, cv
    slot = torch.zeros(kmax + 1, dtype=torch.long, device=dev)  # K -> its column in ch_all (dead: K=0 -> 0)
    slot[torch.tensor(comps, device=dev)] = torch.arange(nk, device=dev)
    ch = ch_all.gather(1, slot[k_chosen][:, None])[:, 0]
    ch = torch.where(unfitted, torch.zeros_like(ch), ch)
    counts = torch.nn.functional.one_hot(labels, max(comps)).sum(1)
    smallest = torch.where(counts > 0, counts, torch.full_like(counts, n)).min(-1).values
    min_fraction = torch.where(unfitted, torch.ones_like(ch), smallest.to(torch.float64) / n)
    ri = RuleInput(
        labels=labels,
        log_prob=log_prob,
        ch=ch,
        k=k_chosen.clamp_min(1),
        dead=unfitted,
        component_log_prob=comp_lp,
        weights=w_pad,
        n_layers=n_layers,
        signals=sig if signals is not None else None,
    )
    out = rule_fn(ri, **(rule_kwargs or {}))
    anomaly, flagged, score = out[:3]
    info = out[3] if len(out) > 3 and isinstance(out[3], dict) else {}
    del sig, ri
    anomaly, flagged = anomaly.bool() & ~unfitted, flagged.bool() & ~unfitted[:, None]
    (
        k_chosen,
        ch,
        ch_all,
        bic_all,
        min_fraction,
        dead,
        anomaly,
        flagged,
        score,
        points,
        w_pad,
        mu_pad,
        cv_pad,
    ) = (
        t.cpu()
        for t in (
            k_chosen,
            ch,
            ch_all,
            bic_all,
            min_fraction,
            dead,
            anomaly,
            flagged,
            score.to(torch.float64),
            points,
            w_pad,
            mu_pad,
            cv_pad,
        )
    )
    ks = k_chosen.tolist()  # per-filter fits of the chosen K (for plots); dead filters get empty ones
    return LayerAudit(
        k=k_chosen,
        ch=ch,
        ch_all=ch_all,
        bic_all=bic_all,
        min_fraction=min_fraction,
        dead=dead,
        anomaly=anomaly,
        flagged=flagged,
        score=score,
        points=points,
        weights=[w_pad[f, :k] for f, k in enumerate(ks)],
        means=[mu_pad[f, :k] for f, k in enumerate(ks)],
        covariances=[cv_pad[f, :k] for f, k in enumerate(ks)],
        degenerate=degenerate.cpu() & ~dead,
        skipped=skipped,
        effective_filters=None if info.get("effective_filters") is None else float(info["effective_filters"]),
        inconclusive=info.get("inconclusive") if skipped is None and len(live) else None,
    )


def sample_votes(audits: Sequence[LayerAudit]) -> torch.Tensor:
    """``[N]`` number of anomaly filters (over all layers) that flag each sample."""
    votes = None
    for a in audits:
        v = (a.flagged & a.anomaly[:, None]).sum(0)
        votes = v if votes is None else votes + v
    return votes if votes is not None else torch.zeros(0, dtype=torch.long)
