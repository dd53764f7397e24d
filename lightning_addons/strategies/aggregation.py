"""Aggregation maths of federated learning, as pure functions on state dicts (no Lightning import).

All runners (the in-process simulation, the ``fedavg`` DDP strategy, the Flower ServerApp) share this
core, so they compute the same global state from the same client updates.

* :func:`weighted_average` / :func:`mean`: FedAvg (McMahan et al., 2017) and its unweighted variant.
* :func:`clip_update` and :func:`add_gaussian_noise`: per-client update clipping and Gaussian noise
  on the aggregate, as in DP-FedAvg (McMahan et al., 2018). This is a *knob*: no privacy accounting is
  done, so no (epsilon, delta) guarantee is claimed.
* :class:`ServerOptimizer`: FedAvgM (server momentum) and FedAdam (Reddi et al., 2021) applied to the
  pseudo-gradient ``global - average``.
* :class:`Aggregator`: the whole server step (validate, clip, average, noise, server optimiser).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from lightning_addons.strategies.state import StateDict, check_compatible

WEIGHTINGS = ("num_samples", "uniform")
SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam")


class InvalidClientUpdate(ValueError):
    """A client update that must not be aggregated (NaN/inf values, wrong keys, shapes or dtypes)."""


def validate_update(
    reference: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor], client: object
) -> None:
    """Raise :class:`InvalidClientUpdate` naming the client unless ``update`` matches ``reference``.

    Example:
        >>> ref = {"w": torch.zeros(2)}
        >>> validate_update(ref, {"w": torch.tensor([float("nan"), 0.0])}, client=3)
        Traceback (most recent call last):
        ...
        lightning_addons.strategies.aggregation.InvalidClientUpdate: client 3 sent an invalid update: ...
    """
    try:
        check_compatible(reference, update, who="update")
    except ValueError as err:
        raise InvalidClientUpdate(f"client {client} sent an invalid update: {err}") from None


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

    Example:
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

    Example:
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

    Example:
        >>> clipped, norm = clip_update({"w": torch.tensor([3.0, 4.0])}, 1.0)
        >>> norm, clipped["w"]
        (5.0, tensor([0.6000, 0.8000]))
    """
    if not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm!r}.")
    norm = global_norm(delta)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: (v * scale if v.is_floating_point() else v.clone()) for k, v in delta.items()}, norm


def add_gaussian_noise(
    state: Mapping[str, torch.Tensor], std: float, generator: torch.Generator
) -> StateDict:
    """``state + N(0, std^2)`` on every floating tensor, drawn from ``generator`` (reproducible).

    Example:
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

    Example:
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
    """One server step: validate updates, optionally clip them, average, add noise, apply the server optimiser.

    With the defaults (``weighting="num_samples"``, no clipping, no noise, ``server_optimizer="none"``)
    this is exactly FedAvg: the new global state is the sample-weighted mean of the client states.

    Args:
        weighting: ``"num_samples"`` (FedAvg) or ``"uniform"`` (plain mean).
        server_optimizer: ``"none"``, ``"fedavgm"`` or ``"fedadam"`` (see :class:`ServerOptimizer`).
        server_lr, server_momentum, server_betas, server_eps: its hyper-parameters.
        clip_norm: clip each client's update ``client - global`` to this global L2 norm (None: off).
        noise_multiplier: Gaussian noise of std ``noise_multiplier * clip_norm / n_clients`` added to the
            averaged update (needs ``clip_norm``). A knob, not a privacy guarantee (no accounting).
        seed: seed of the noise generator.

    Raises:
        ValueError: unknown ``weighting``/``server_optimizer``, negative ``noise_multiplier``, noise
            without ``clip_norm``.

    Example:
        >>> agg = Aggregator()
        >>> g = {"w": torch.zeros(1)}
        >>> agg.aggregate(g, [{"w": torch.tensor([1.0])}, {"w": torch.tensor([4.0])}], [3, 1])["w"]
        tensor([1.7500])
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
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {list(WEIGHTINGS)}, got {weighting!r}.")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"`clip_norm` must be > 0 or None, got {clip_norm!r}.")
        if not noise_multiplier >= 0:
            raise ValueError(f"`noise_multiplier` must be >= 0, got {noise_multiplier!r}.")
        if noise_multiplier > 0 and clip_norm is None:
            raise ValueError("`noise_multiplier` > 0 needs `clip_norm` (the noise scale is relative to it).")
        self.weighting = weighting
        self.clip_norm = clip_norm
        self.noise_multiplier = float(noise_multiplier)
        self.server = ServerOptimizer(
            server_optimizer, server_lr, server_momentum, tuple(server_betas), server_eps
        )
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def is_plain_average(self) -> bool:
        return self.clip_norm is None and self.noise_multiplier == 0 and self.server.name == "none"

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
        ids = list(range(len(updates))) if client_ids is None else list(client_ids)
        for cid, upd in zip(ids, updates):
            validate_update(global_state, upd, cid)
        weights = self.weights(num_samples)
        contributions = [self.contribution(global_state, upd) for upd in updates]
        return self.finalize(global_state, weighted_average(contributions, weights), len(updates))

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
        DDP strategy compute the average with an all-reduce and still share this code.
        """
        if self.is_plain_average:
            return dict(update)
        d = {
            k: (update[k] - global_state[k]) if update[k].is_floating_point() else update[k]
            for k in global_state
        }
        if self.clip_norm is not None:
            d, _ = clip_update(d, self.clip_norm)
        return d

    def finalize(
        self, global_state: Mapping[str, torch.Tensor], averaged: Mapping[str, torch.Tensor], num_clients: int
    ) -> StateDict:
        """The new global state from the weighted average of the contributions."""
        if self.is_plain_average:
            self.server.steps += 1
            return {k: v.clone() for k, v in averaged.items()}
        avg_delta = dict(averaged)
        if self.noise_multiplier > 0:
            std = self.noise_multiplier * float(self.clip_norm) / max(1, num_clients)
            avg_delta = add_gaussian_noise(avg_delta, std, self.generator)
        average = {
            k: (global_state[k] + avg_delta[k]) if global_state[k].is_floating_point() else avg_delta[k]
            for k in global_state
        }
        return self.server.step(global_state, average)

    def state_dict(self) -> dict:
        return {"server": self.server.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping) -> None:
        self.server.load_state_dict(state["server"])
        self.generator.set_state(state["generator"])
