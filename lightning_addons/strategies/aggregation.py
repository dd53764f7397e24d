"""Aggregation maths of federated learning, as pure functions on state dicts (no Lightning import).

All runners (the in-process simulation, the ``fedavg`` DDP strategy, the Flower ServerApp) share this
core, so they compute the same global state from the same client updates.

* :func:`weighted_average` / :func:`mean`: FedAvg (McMahan et al., 2017) and its unweighted variant.
* :func:`clip_update` and :func:`add_gaussian_noise`: per-client update clipping and Gaussian noise
  on the aggregate, as in DP-FedAvg (McMahan et al., 2018). This is a *knob*: no privacy accounting is
  done, so no (epsilon, delta) guarantee is claimed.
* :class:`ServerOptimizer`: FedAvgM (server momentum) and FedAdam (Reddi et al., 2021) applied to the
  pseudo-gradient ``global - average``.
* :func:`coordinate_median`, :func:`trimmed_mean`, :func:`krum`: robust aggregation rules
  (Yin et al., 2018; Blanchard et al., 2017); :func:`screen_norms`: the per-round norm guard.
* :class:`Aggregator`: the whole server step (validate, screen, clip, aggregate, noise, server optimiser,
  finiteness check).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from lightning_addons.strategies.state import IncompatibleState, StateDict, check_compatible

log = logging.getLogger(__name__)

WEIGHTINGS = ("num_samples", "uniform")
SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam")
RULES = ("fedavg", "median", "trimmed_mean", "krum", "norm_bounded")
OUTLIER_ACTIONS = ("reject", "clip")


class InvalidClientUpdate(ValueError):
    """A client update that must not be aggregated (NaN/inf values, wrong keys, shapes or dtypes).

    ``client``, ``key`` and ``reason`` (``"keys"``, ``"type"``, ``"shape"``, ``"dtype"``,
    ``"non_finite"``) say which update, which tensor and why.
    """

    def __init__(
        self, message: str, client: object = None, key: str | None = None, reason: str = "invalid"
    ) -> None:
        super().__init__(message)
        self.client, self.key, self.reason = client, key, reason


def validate_update(
    reference: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor], client: object
) -> None:
    """Raise :class:`InvalidClientUpdate` naming the client unless ``update`` matches ``reference``.

    Examples:
        >>> ref = {"w": torch.zeros(2)}
        >>> validate_update(ref, {"w": torch.tensor([float("nan"), 0.0])}, client=3)
        Traceback (most recent call last):
        ...
        lightning_addons.strategies.aggregation.InvalidClientUpdate: client 3 sent an invalid update: ...
    """
    try:
        check_compatible(reference, update, who="update")
    except IncompatibleState as err:
        raise InvalidClientUpdate(
            f"client {client} sent an invalid update: {err}", client=client, key=err.key, reason=err.reason
        ) from None


def _check_weights(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> torch.Tensor:
    if len(states) == 0:
        raise ValueError("Cannot aggregate an empty list of client states.")
    if len(weights) != len(states):
        raise ValueError(f"`weights` has {len(weights)} entries for {len(states)} client states.")
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"`weights` must be finite, non-negative and sum to > 0, got {list(weights)}.")
    return w


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
    """FedAvg: ``sum_i w_i * x_i / sum_i w_i`` for every key (float tensors; accumulated in float64).

    Non-floating tensors (counters) are taken from the client with the largest weight.

    Args:
        states: client state dicts with identical keys and shapes.
        weights: one non-negative weight per state (usually the local sample counts).

    Raises:
        ValueError: empty ``states``, wrong number of weights, negative/zero-sum/non-finite weights,
            or states with different keys/shapes.

    Examples:
        >>> a, b = {"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}
        >>> weighted_average([a, b], [1, 2])["w"]
        tensor([2.])
    """
    w = _check_weights(states, weights)
    ref = states[0]
    for i, s in enumerate(states[1:], start=1):
        try:
            check_compatible(ref, s, who=f"states[{i}]")
        except ValueError as err:
            raise ValueError(f"Client states differ: {err}") from None
    top = int(torch.argmax(w))
    total = w.sum()
    out: StateDict = {}
    for key, first in ref.items():
        if not first.is_floating_point():
            out[key] = states[top][key].clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for wi, s in zip(w.tolist(), states):
            if wi:
                acc.add_(s[key].to(torch.float64), alpha=wi)
        out[key] = (acc / total).to(first.dtype)
    return out


def mean(states: Sequence[Mapping[str, torch.Tensor]]) -> StateDict:
    """Unweighted mean of client states (:func:`weighted_average` with equal weights).

    Examples:
        >>> mean([{"w": torch.tensor([1.0])}, {"w": torch.tensor([2.0])}])["w"]
        tensor([1.5000])
    """
    return weighted_average(states, [1.0] * len(states))


def global_norm(state: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of all floating tensors of ``state`` taken together."""
    sq = sum(float(t.double().pow(2).sum()) for t in state.values() if t.is_floating_point())
    return math.sqrt(sq)


def clip_update(delta: Mapping[str, torch.Tensor], max_norm: float) -> tuple[StateDict, float]:
    """Scale ``delta`` so that its global L2 norm is at most ``max_norm``; returns (clipped, original norm).

    Examples:
        >>> clipped, norm = clip_update({"w": torch.tensor([3.0, 4.0])}, 1.0)
        >>> norm, clipped["w"]
        (5.0, tensor([0.6000, 0.8000]))
    """
    if not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm!r}.")
    norm = global_norm(delta)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: (v * scale if v.is_floating_point() else v.clone()) for k, v in delta.items()}, norm


def _stack(states: Sequence[Mapping[str, torch.Tensor]], key: str) -> torch.Tensor:
    return torch.stack([s[key].to(torch.float64) for s in states])


def _float_keys_or_first(states: Sequence[Mapping[str, torch.Tensor]], per_key) -> StateDict:
    if len(states) == 0:
        raise ValueError("Cannot aggregate an empty list of client states.")
    out: StateDict = {}
    for key, first in states[0].items():
        out[key] = per_key(key).to(first.dtype) if first.is_floating_point() else first.clone()
    return out


def coordinate_median(states: Sequence[Mapping[str, torch.Tensor]]) -> StateDict:
    """Coordinate-wise median (Yin et al., 2018): ``numpy.median`` over clients of every coordinate.

    For an even number of states it is the mean of the two middle values (as numpy's). Unweighted;
    non-floating tensors are taken from the first state.

    Examples:
        >>> coordinate_median([{"w": torch.tensor([1.0, 9.0])}, {"w": torch.tensor([2.0, 0.0])},
        ...                    {"w": torch.tensor([100.0, 5.0])}])["w"]
        tensor([2., 5.])
    """

    def med(key: str) -> torch.Tensor:
        x = _stack(states, key).sort(dim=0).values
        n = x.shape[0]
        return x[n // 2] if n % 2 else (x[n // 2 - 1] + x[n // 2]) / 2

    return _float_keys_or_first(states, med)


def trimmed_mean(states: Sequence[Mapping[str, torch.Tensor]], trim_fraction: float) -> StateDict:
    """Coordinate-wise trimmed mean (Yin et al., 2018), as ``scipy.stats.trim_mean``.

    Per coordinate the ``int(trim_fraction * n)`` largest and smallest client values are dropped and the
    rest averaged. Unweighted; non-floating tensors are taken from the first state.

    Raises:
        ValueError: ``trim_fraction`` outside [0, 0.5).

    Examples:
        >>> states = [{"w": torch.tensor([float(v)])} for v in (1, 2, 3, 4, 1000)]
        >>> trimmed_mean(states, 0.2)["w"]
        tensor([3.])
    """
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"`trim_fraction` must be in [0, 0.5), got {trim_fraction!r}.")
    n = len(states)
    b = int(trim_fraction * n)

    def tmean(key: str) -> torch.Tensor:
        x = _stack(states, key).sort(dim=0).values
        return x[b : n - b].mean(dim=0)

    return _float_keys_or_first(states, tmean)


def krum_scores(states: Sequence[Mapping[str, torch.Tensor]], byzantine: int) -> list[float]:
    """Krum scores (Blanchard et al., 2017): for each state, the sum of squared L2 distances (over all
    floating tensors) to its ``n - byzantine - 2`` nearest other states (at least 1 when ``n > 1``)."""
    n = len(states)
    keys = [k for k, v in states[0].items() if v.is_floating_point()]
    flat = torch.stack([torch.cat([s[k].to(torch.float64).reshape(-1) for k in keys]) for s in states])
    d2 = torch.cdist(flat, flat).pow(2) if n > 1 else torch.zeros(1, 1, dtype=torch.float64)
    m = min(max(n - byzantine - 2, 1), n - 1)
    scores = []
    for i in range(n):
        others = torch.cat([d2[i, :i], d2[i, i + 1 :]]).sort().values
        scores.append(float(others[:m].sum()) if m > 0 else 0.0)
    return scores


def krum(
    states: Sequence[Mapping[str, torch.Tensor]], byzantine: int = 1, select: int | None = 1
) -> tuple[StateDict, int]:
    """Krum: the client state with the lowest :func:`krum_scores`; returns (a copy of it, its index).

    With ``select`` = m > 1 it is Multi-Krum (Blanchard et al., 2017): the unweighted mean of the m states
    with the lowest scores (``None``: ``n - byzantine``); the index returned is the best one's.
    Blanchard et al. require ``n > 2 * byzantine + 2``; with fewer states the neighbourhood shrinks to
    ``max(1, n - byzantine - 2)`` (so two states tie and the first wins).

    Raises:
        ValueError: no states, ``byzantine`` < 0 or ``select`` < 1.

    Examples:
        >>> states = [{"w": torch.tensor([v])} for v in (1.0, 1.1, 0.9, 1.05, 50.0)]
        >>> krum(states, byzantine=1)[1]
        3
    """
    if len(states) == 0:
        raise ValueError("Cannot aggregate an empty list of client states.")
    if not isinstance(byzantine, int) or byzantine < 0:
        raise ValueError(f"`krum_byzantine` must be an integer >= 0, got {byzantine!r}.")
    if select is not None and (not isinstance(select, int) or select < 1):
        raise ValueError(f"`krum_select` must be an integer >= 1 or None, got {select!r}.")
    scores = krum_scores(states, byzantine)
    order = sorted(range(len(states)), key=lambda i: (scores[i], i))
    m = max(1, len(states) - byzantine) if select is None else min(select, len(states))
    if m == 1:
        return {k: v.clone() for k, v in states[order[0]].items()}, order[0]
    return weighted_average([states[i] for i in order[:m]], [1.0] * m), order[0]


def screen_norms(norms: Sequence[float], max_ratio: float) -> tuple[float, list[bool]]:
    """The per-round norm guard: which updates have a norm above ``max_ratio`` times the round's median.

    The median is the lower median (``torch.median``: the smaller middle value for an even count), so one
    huge update of two is caught. A round whose median is 0 flags only non-finite norms. Returns
    ``(median, flags)``.

    Examples:
        >>> screen_norms([1.0, 1.2, 0.9, 1e6], max_ratio=10.0)
        (1.0, [False, False, False, True])
    """
    t = torch.tensor([float(x) for x in norms], dtype=torch.float64)
    finite = t[torch.isfinite(t)]
    med = float(finite.median()) if finite.numel() else math.inf
    limit = max_ratio * med if med > 0 else math.inf
    return med, [not (math.isfinite(x) and (x <= limit)) for x in t.tolist()]


def add_gaussian_noise(
    state: Mapping[str, torch.Tensor], std: float, generator: torch.Generator
) -> StateDict:
    """``state + N(0, std^2)`` on every floating tensor, drawn from ``generator`` (reproducible).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> add_gaussian_noise({"w": torch.zeros(3)}, 0.0, g)["w"]
        tensor([0., 0., 0.])
    """
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0, got {std!r}.")
    out: StateDict = {}
    for k, v in state.items():
        if v.is_floating_point() and std > 0:
            noise = torch.randn(v.shape, generator=generator, dtype=torch.float32).to(v.dtype)
            out[k] = v + std * noise.to(v.device)
        else:
            out[k] = v.clone()
    return out


class ServerOptimizer:
    """Server-side optimiser on the pseudo-gradient ``g = global - average`` (FedOpt, Reddi et al. 2021).

    * ``"none"``: the new global state is the average (plain FedAvg, ``lr`` ignored).
    * ``"fedavgm"``: ``m = momentum * m + g; x -= lr * m`` (Hsu et al., 2019).
    * ``"fedadam"``: Adam moments on ``g`` with ``betas`` and ``eps`` (no bias correction, as in FedOpt).

    State (moments, step) is tensors and primitives, so it checkpoints with ``weights_only=True``.

    Args:
        name: ``"none"``, ``"fedavgm"`` or ``"fedadam"``.
        lr: server learning rate (> 0).
        momentum: FedAvgM momentum in [0, 1).
        betas: FedAdam betas, each in [0, 1).
        eps: FedAdam epsilon (adaptivity, > 0).

    Raises:
        ValueError: unknown ``name`` or out-of-range hyper-parameters.

    Examples:
        >>> opt = ServerOptimizer("fedavgm", lr=1.0, momentum=0.0)
        >>> opt.step({"w": torch.tensor([1.0])}, {"w": torch.tensor([0.5])})["w"]
        tensor([0.5000])
    """

    def __init__(
        self,
        name: Literal["none", "fedavgm", "fedadam"] = "none",
        lr: float = 1.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-3,
    ) -> None:
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"`server_optimizer` must be one of {list(SERVER_OPTIMIZERS)}, got {name!r}.")
        if not lr > 0:
            raise ValueError(f"`server_lr` must be > 0, got {lr!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"`server_momentum` must be in [0, 1), got {momentum!r}.")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"`server_betas` must be two values in [0, 1), got {betas!r}.")
        if not eps > 0:
            raise ValueError(f"`server_eps` must be > 0, got {eps!r}.")
        self.name, self.lr, self.momentum, self.betas, self.eps = (
            name,
            float(lr),
            float(momentum),
            tuple(betas),
            eps,
        )
        self.steps = 0
        self.m: StateDict = {}
        self.v: StateDict = {}

    def step(
        self, global_state: Mapping[str, torch.Tensor], average: Mapping[str, torch.Tensor]
    ) -> StateDict:
        """The new global state from the current one and the clients' (processed) average."""
        self.steps += 1
        if self.name == "none":
            return {k: v.clone() for k, v in average.items()}
        out: StateDict = {}
        for key, x in global_state.items():
            if not x.is_floating_point():
                out[key] = average[key].clone()
                continue
            g = x.double() - average[key].double()
            if self.name == "fedavgm":
                m = self.m.get(key)
                m = g if m is None else self.momentum * m + g
                self.m[key] = m
                upd = m
            else:
                b1, b2 = self.betas
                m = self.m.get(key, torch.zeros_like(g))
                v = self.v.get(key, torch.zeros_like(g))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                self.m[key], self.v[key] = m, v
                upd = m / (v.sqrt() + self.eps)
            out[key] = (x.double() - self.lr * upd).to(x.dtype)
        return out

    def state_dict(self) -> dict:
        return {"name": self.name, "steps": self.steps, "m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"Server optimiser state is for {state['name']!r}, this one is {self.name!r}.")
        self.steps = int(state.get("steps", 0))
        self.m = dict(state.get("m", {}))
        self.v = dict(state.get("v", {}))


class Aggregator:
    """One server step: validate, screen, clip, aggregate with a rule, add noise, apply the server optimiser.

    The step, in order:

    1. **validate** every update against the global state (keys, shapes, exact dtypes, finite values):
       an invalid one raises :class:`InvalidClientUpdate` before anything is averaged;
    2. **norm guard** (on by default): an update ``client - global`` whose L2 norm exceeds
       ``max_norm_ratio`` times the round's (lower) median norm is rejected (``on_outlier="reject"``)
       or clipped to that bound (``"clip"``);
    3. optional per-client clipping to ``clip_norm`` (the DP-FedAvg knob);
    4. the aggregation ``rule`` over the surviving updates:

       * ``"fedavg"``: the sample-weighted mean (McMahan et al., 2017);
       * ``"median"``: coordinate-wise median (:func:`coordinate_median`), unweighted;
       * ``"trimmed_mean"``: coordinate-wise trimmed mean (:func:`trimmed_mean`), unweighted;
       * ``"krum"``: the update closest to its neighbours, or Multi-Krum's mean of the ``krum_select``
         closest (:func:`krum`);
       * ``"norm_bounded"``: FedAvg of updates clipped to ``norm_bound`` (default: the round's median
         norm), as in Sun et al. (2019);

    5. Gaussian noise (``noise_multiplier``), then the server optimiser on the pseudo-gradient;
    6. **finiteness check**: a new global state holding NaN/inf is discarded, the previous one is kept
       (and the server optimiser's state rolled back), with a warning.

    Every rejection is logged at WARNING with client, key and reason, and listed in
    :attr:`last_rejections` (``{"client", "key", "reason", "detail"}`` dicts) for the runner to record as
    metrics. With ``rule="fedavg"``, no clipping, no noise and ``server_optimizer="none"``, a round where
    the guard rejects nothing is exactly FedAvg (the sample-weighted mean of the client states).

    Args:
        weighting: ``"num_samples"`` (FedAvg) or ``"uniform"`` (plain mean) for ``fedavg``/``norm_bounded``.
        server_optimizer: ``"none"``, ``"fedavgm"`` or ``"fedadam"`` (see :class:`ServerOptimizer`).
        server_lr, server_momentum, server_betas, server_eps: its hyper-parameters.
        clip_norm: clip each client's update ``client - global`` to this global L2 norm (None: off).
        noise_multiplier: Gaussian noise of std ``noise_multiplier * clip_norm / n_clients`` added to the
            averaged update (needs ``clip_norm``). A knob, not a privacy guarantee (no accounting).
        seed: seed of the noise generator.
        rule: ``"fedavg"``, ``"median"``, ``"trimmed_mean"``, ``"krum"`` or ``"norm_bounded"``.
        trim_fraction: fraction cut at each end by ``"trimmed_mean"``, in [0, 0.5).
        krum_byzantine: number of attackers ``f`` Krum tolerates (>= 0).
        krum_select: Multi-Krum's ``m``, the number of lowest-score updates averaged (1: Krum; None:
            ``n - f``).
        norm_bound: the bound of ``"norm_bounded"`` (None: the round's median update norm).
        max_norm_ratio: the norm guard's ``k`` (>= 1); None turns the guard off.
        on_outlier: ``"reject"`` or ``"clip"`` an update caught by the guard.

    Raises:
        ValueError: unknown ``weighting``/``server_optimizer``/``rule``/``on_outlier``, out-of-range
            ``noise_multiplier``, ``trim_fraction``, ``krum_byzantine``, ``norm_bound`` or
            ``max_norm_ratio``, noise without ``clip_norm``.

    Examples:
        >>> agg = Aggregator()
        >>> g = {"w": torch.zeros(1)}
        >>> agg.aggregate(g, [{"w": torch.tensor([1.0])}, {"w": torch.tensor([4.0])}], [3, 1])["w"]
        tensor([1.7500])
        >>> ups = [{"w": torch.tensor([v])} for v in (1.0, 1.2, 0.8, 1e6)]
        >>> agg.aggregate(g, ups, [1, 1, 1, 1])["w"], [r["reason"] for r in agg.last_rejections]
        (tensor([1.]), ['norm_outlier'])
        >>> Aggregator(rule="median", max_norm_ratio=None).aggregate(g, ups, [1, 1, 1, 1])["w"]
        tensor([1.1000])
    """

    def __init__(
        self,
        weighting: Literal["num_samples", "uniform"] = "num_samples",
        server_optimizer: Literal["none", "fedavgm", "fedadam"] = "none",
        server_lr: float = 1.0,
        server_momentum: float = 0.9,
        server_betas: tuple[float, float] = (0.9, 0.99),
        server_eps: float = 1e-3,
        clip_norm: float | None = None,
        noise_multiplier: float = 0.0,
        seed: int = 0,
        rule: Literal["fedavg", "median", "trimmed_mean", "krum", "norm_bounded"] = "fedavg",
        trim_fraction: float = 0.1,
        krum_byzantine: int = 1,
        krum_select: int | None = 1,
        norm_bound: float | None = None,
        max_norm_ratio: float | None = 10.0,
        on_outlier: Literal["reject", "clip"] = "reject",
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {list(WEIGHTINGS)}, got {weighting!r}.")
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}.")
        if on_outlier not in OUTLIER_ACTIONS:
            raise ValueError(f"`on_outlier` must be one of {list(OUTLIER_ACTIONS)}, got {on_outlier!r}.")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"`clip_norm` must be > 0 or None, got {clip_norm!r}.")
        if norm_bound is not None and not norm_bound > 0:
            raise ValueError(f"`norm_bound` must be > 0 or None, got {norm_bound!r}.")
        if max_norm_ratio is not None and not (math.isfinite(max_norm_ratio) and max_norm_ratio >= 1):
            raise ValueError(
                f"`max_norm_ratio` must be a finite number >= 1 or None, got {max_norm_ratio!r}."
            )
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"`trim_fraction` must be in [0, 0.5), got {trim_fraction!r}.")
        if not isinstance(krum_byzantine, int) or isinstance(krum_byzantine, bool) or krum_byzantine < 0:
            raise ValueError(f"`krum_byzantine` must be an integer >= 0, got {krum_byzantine!r}.")
        if krum_select is not None and (
            not isinstance(krum_select, int) or isinstance(krum_select, bool) or krum_select < 1
        ):
            raise ValueError(f"`krum_select` must be an integer >= 1 or None, got {krum_select!r}.")
        if not noise_multiplier >= 0:
            raise ValueError(f"`noise_multiplier` must be >= 0, got {noise_multiplier!r}.")
        if noise_multiplier > 0 and clip_norm is None:
            raise ValueError("`noise_multiplier` > 0 needs `clip_norm` (the noise scale is relative to it).")
        self.weighting = weighting
        self.clip_norm = clip_norm
        self.noise_multiplier = float(noise_multiplier)
        self.rule, self.trim_fraction, self.krum_byzantine = rule, float(trim_fraction), krum_byzantine
        self.norm_bound, self.krum_select = norm_bound, krum_select
        self.max_norm_ratio, self.on_outlier = max_norm_ratio, on_outlier
        self.seed = int(seed)
        self.server = ServerOptimizer(
            server_optimizer, server_lr, server_momentum, tuple(server_betas), server_eps
        )
        self.generator = torch.Generator().manual_seed(int(seed))
        #: rejections of the last :meth:`aggregate` (or :meth:`finalize`) call
        self.last_rejections: list[dict] = []

    def config(self) -> dict:
        """The hyper-parameters, as primitives (part of a federated run's fingerprint)."""
        s = self.server
        return {
            "weighting": self.weighting,
            "server_optimizer": s.name,
            "server_lr": s.lr,
            "server_momentum": s.momentum,
            "server_betas": list(s.betas),
            "server_eps": s.eps,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "seed": self.seed,
            "rule": self.rule,
            "trim_fraction": self.trim_fraction,
            "krum_byzantine": self.krum_byzantine,
            "krum_select": self.krum_select,
            "norm_bound": self.norm_bound,
            "max_norm_ratio": self.max_norm_ratio,
            "on_outlier": self.on_outlier,
        }

    @property
    def is_plain_average(self) -> bool:
        return (
            self.rule == "fedavg"
            and self.clip_norm is None
            and self.noise_multiplier == 0
            and self.server.name == "none"
        )

    def _reject(self, client: object, key: str | None, reason: str, detail: str) -> None:
        self.last_rejections.append({"client": client, "key": key, "reason": reason, "detail": detail})
        log.warning("Aggregation: client %s, key %s: %s (%s)", client, key if key else "*", reason, detail)

    def aggregate(
        self,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[Mapping[str, torch.Tensor]],
        num_samples: Sequence[float],
        client_ids: Sequence[object] | None = None,
    ) -> StateDict:
        """The new global state from the clients' locally trained states.

        Raises:
            InvalidClientUpdate: an update with NaN/inf, wrong keys, shapes or dtypes (checked first,
                so nothing is averaged in).
            ValueError: no updates, bad weights.
        """
        self.last_rejections = []
        ids = list(range(len(updates))) if client_ids is None else list(client_ids)
        if len(updates) == 0:
            raise ValueError("Cannot aggregate an empty list of client states.")
        if len(num_samples) != len(updates):
            raise ValueError(f"`weights` has {len(num_samples)} entries for {len(updates)} client states.")
        for cid, upd in zip(ids, updates):
            validate_update(global_state, upd, cid)
        weights = self.weights(num_samples)
        _check_weights(updates, weights)
        deltas = [_delta(global_state, upd) for upd in updates]
        keep = list(range(len(updates)))
        changed = False
        if self.max_norm_ratio is not None and len(updates) > 1:
            norms = [global_norm(d) for d in deltas]
            med, flags = screen_norms(norms, self.max_norm_ratio)
            bound = self.max_norm_ratio * med
            keep = []
            for i, flagged in enumerate(flags):
                if not flagged:
                    keep.append(i)
                    continue
                detail = f"update norm {norms[i]:.4g} > {self.max_norm_ratio:g} x the round's median norm {med:.4g}"
                if self.on_outlier == "clip" and math.isfinite(norms[i]):
                    deltas[i], _ = clip_update(deltas[i], bound)
                    changed = True
                    keep.append(i)
                    self._reject(ids[i], None, "norm_outlier_clipped", detail + f"; clipped to {bound:.4g}")
                else:
                    self._reject(ids[i], None, "norm_outlier", detail + "; not aggregated")
        states = [updates[i] for i in keep]
        deltas = [deltas[i] for i in keep]
        weights = [weights[i] for i in keep]
        if self.is_plain_average and not changed:
            return self._checked(global_state, weighted_average(states, weights), count_step=True)
        if self.clip_norm is not None:
            deltas = [clip_update(d, self.clip_norm)[0] for d in deltas]
        averaged = self.combine(deltas, weights)
        return self.finalize(global_state, averaged, len(deltas), deltas_given=True)

    def combine(self, deltas: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
        """The rule applied to (screened, clipped) updates ``client - global``."""
        if self.rule == "median":
            return coordinate_median(deltas)
        if self.rule == "trimmed_mean":
            return trimmed_mean(deltas, self.trim_fraction)
        if self.rule == "krum":
            return krum(deltas, self.krum_byzantine, self.krum_select)[0]
        if self.rule == "norm_bounded":
            norms = [global_norm(d) for d in deltas]
            bound = self.norm_bound if self.norm_bound is not None else float(torch.tensor(norms).median())
            if bound > 0:
                deltas = [clip_update(d, bound)[0] for d in deltas]
        return weighted_average(deltas, weights)

    def weights(self, num_samples: Sequence[float]) -> list[float]:
        """The averaging weights: the sample counts (``"num_samples"``) or ones (``"uniform"``)."""
        return (
            [float(n) for n in num_samples] if self.weighting == "num_samples" else [1.0] * len(num_samples)
        )

    def contribution(
        self, global_state: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]
    ) -> StateDict:
        """What a client contributes to the weighted average: its state (plain FedAvg) or its clipped delta.

        Splitting :meth:`aggregate` into ``contribution`` -> weighted average -> :meth:`finalize` lets the
        DDP strategy compute the average with an all-reduce and still share this code (``"fedavg"`` only).
        """
        if self.is_plain_average:
            return dict(update)
        d = _delta(global_state, update)
        if self.clip_norm is not None:
            d, _ = clip_update(d, self.clip_norm)
        return d

    def finalize(
        self,
        global_state: Mapping[str, torch.Tensor],
        averaged: Mapping[str, torch.Tensor],
        num_clients: int,
        deltas_given: bool = False,
    ) -> StateDict:
        """The new global state from the weighted average of the contributions (kept finite)."""
        if self.is_plain_average and not deltas_given:
            return self._checked(global_state, {k: v.clone() for k, v in averaged.items()}, count_step=True)
        avg_delta = dict(averaged)
        if self.noise_multiplier > 0:
            std = self.noise_multiplier * float(self.clip_norm) / max(1, num_clients)
            avg_delta = add_gaussian_noise(avg_delta, std, self.generator)
        average = {
            k: (global_state[k] + avg_delta[k]) if global_state[k].is_floating_point() else avg_delta[k]
            for k in global_state
        }
        snapshot = self.server.state_dict()
        new = self.server.step(global_state, average)
        out = self._checked(global_state, new, count_step=False)
        if out is not new:
            self.server.load_state_dict(snapshot)
        return out

    def _checked(
        self, global_state: Mapping[str, torch.Tensor], new: StateDict, count_step: bool
    ) -> StateDict:
        bad = [k for k, v in new.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            self._reject(
                None,
                bad[0],
                "non_finite_aggregate",
                f"the aggregated state holds NaN/inf in {bad}; the previous global state is kept",
            )
            return {k: v.clone() for k, v in global_state.items()}
        if count_step:
            self.server.steps += 1
        return new

    def state_dict(self) -> dict:
        return {"server": self.server.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping) -> None:
        self.server.load_state_dict(state["server"])
        self.generator.set_state(state["generator"])


def _delta(global_state: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]) -> StateDict:
    return {
        k: (update[k] - global_state[k]) if update[k].is_floating_point() else update[k] for k in global_state
    }
