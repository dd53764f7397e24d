"""Client-level differential privacy for federated averaging (DP-FedAvg), with a maintained accountant.

Pure PyTorch (no Lightning import); the accountant is Opacus's (``pip install 'lightning-addons[dp]'``).

The mechanism is DP-FedAvg with the fixed-denominator estimator (McMahan et al., 2018, "Learning
Differentially Private Recurrent Language Models"), the one the sampled Gaussian mechanism accounts for
(Mironov, Talwar and Zhang, 2019):

1. every client joins a round independently with probability ``q = sample_rate`` (Poisson sampling);
2. each participant's update ``delta_i = client_i - global`` is clipped to global L2 norm ``S = clip_norm``;
3. the server adds ``N(0, (z S)^2)`` to the *sum* of the clipped updates (``z = noise_multiplier``)
   and divides by the expected number of participants ``q * num_clients`` (a constant, so one client's
   presence changes the released sum by at most ``S``: sample counts are not used as weights);
4. the new global state is ``global + noisy_average`` (optionally post-processed by a server optimiser).

One round is one step of the sampled Gaussian mechanism ``(z, q)`` on the client-level dataset (adjacent
= one client added or removed, with all its data), so the spent ``(epsilon, delta)`` after ``T`` rounds is
what the accountant reports for ``T`` steps of that mechanism. The noise multiplier can be given or
calibrated from a target ``(epsilon, delta)`` over ``rounds`` rounds with Opacus's own search.

Two honest limits: the accounting assumes Poisson sampling and clients that cannot see the noise; the
noise comes from PyTorch's generator (not a cryptographically secure one; Opacus's ``secure_mode`` has the
same caveat), and a fixed ``seed`` makes it reproducible, which is for simulation only: a deployment
leaves ``seed=None``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from lightning_addons._imports import require
from lightning_addons.strategies.aggregation import clip_update
from lightning_addons.strategies.state import StateDict

ACCOUNTANTS = ("rdp", "prv")


def _accountant(kind: str):
    accountants = require("opacus.accountants", extra="dp", feature="Client-level differential privacy")
    return accountants.create_accountant(mechanism=kind)


def epsilon_spent(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """The accountant's epsilon for ``steps`` steps of the sampled Gaussian mechanism ``(z, q)`` at ``delta``.

    Examples:
        >>> round(epsilon_spent(5.0, 1.0, 20, 1e-5), 2)  # 20 Gaussian mechanisms, sigma = 5 (no sampling)
        4.16
    """
    if steps <= 0:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """The smallest noise multiplier (to the search precision) whose epsilon after ``rounds`` rounds is at
    most ``target_epsilon``: Opacus's ``get_noise_multiplier`` (a bisection on the accountant), so the spent
    epsilon lies in ``(target_epsilon - epsilon_tolerance, target_epsilon]``.

    Raises:
        ValueError: a target the accountant cannot reach (names the values).

    Examples:
        >>> z = calibrate_noise_multiplier(8.0, 1e-5, sample_rate=1.0, rounds=10)
        >>> 7.99 < epsilon_spent(z, 1.0, 10, 1e-5) <= 8.0
        True
    """
    utils = require("opacus.accountants.utils", extra="dp", feature="Client-level differential privacy")
    try:
        return float(
            utils.get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=rounds,
                accountant=accountant,
                epsilon_tolerance=epsilon_tolerance,
            )
        )
    except ValueError as err:
        raise ValueError(
            f"No noise multiplier reaches target_epsilon={target_epsilon} at delta={delta} over {rounds} "
            f"rounds with sample_rate={sample_rate}: {err}"
        ) from err


def dp_fedavg_average(
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[Mapping[str, torch.Tensor]],
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    generator: torch.Generator,
) -> tuple[StateDict, list[float]]:
    """``global + (sum_i clip(update_i - global, S) + N(0, (z S)^2)) / expected_clients`` and the update norms.

    Every tensor of the state must be floating point (integer tensors cannot carry the noise). With no
    updates the result is ``global`` plus noise (the mechanism still runs).

    Examples:
        >>> g = {"w": torch.zeros(2)}
        >>> new, norms = dp_fedavg_average(g, [{"w": torch.tensor([3.0, 4.0])}], 1.0, 0.0, 2.0, torch.Generator())
        >>> new["w"], norms
        (tensor([0.3000, 0.4000]), [5.0])
    """
    bad = [k for k, v in global_state.items() if not v.is_floating_point()]
    if bad:
        raise ValueError(
            f"Client-level DP adds Gaussian noise to every exchanged tensor, but {bad} are not floating point: "
            "exchange only floating-point state (federated_state_dict)."
        )
    total = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in global_state.items()}
    norms = []
    for upd in updates:
        delta = {
            k: upd[k].detach().cpu().double() - global_state[k].detach().cpu().double() for k in global_state
        }
        clipped, norm = clip_update(delta, clip_norm)
        norms.append(norm)
        for k in total:
            total[k] += clipped[k]
    std = float(noise_multiplier) * float(clip_norm)
    out: StateDict = {}
    for k, v in global_state.items():
        noisy = total[k]
        if std > 0:
            noisy = noisy + std * torch.randn(v.shape, generator=generator, dtype=torch.float64)
        out[k] = (v.detach().cpu().double() + noisy / float(expected_clients)).to(v.dtype).to(v.device)
    return out, norms


class ClientDP:
    """DP-FedAvg with client-level differential privacy and an (epsilon, delta) accountant.

    Plug it into :class:`~lightning_addons.federated.FederatedSimulation` (``privacy=ClientDP(...)``): the
    runner then samples clients with :meth:`sample_clients`, aggregates with :meth:`aggregate`, logs the
    spent ``epsilon`` per round and stores the accountant in its checkpoints (a resumed run continues
    the count).

    Args:
        clip_norm: ``S``, the global L2 bound of each client's update.
        sample_rate: ``q``, each client's probability of joining a round (Poisson sampling), in (0, 1].
        delta: the ``delta`` of the reported ``(epsilon, delta)``, in (0, 1).
        noise_multiplier: ``z`` (noise std on the sum is ``z * S``); give it, or ``target_epsilon``.
        target_epsilon: calibrate ``z`` so that ``rounds`` rounds spend at most this epsilon.
        rounds: the number of rounds the calibration budgets for (needed with ``target_epsilon``).
        accountant: ``"rdp"`` (Opacus's RDP accountant) or ``"prv"`` (its PRV accountant).
        seed: seed of sampling and noise (round ``r`` uses ``(seed, r)``, so a resumed run draws what an
            uninterrupted one would); ``None`` draws a fresh secret seed (what a deployment must do).

    Raises:
        ValueError: a non-positive ``clip_norm``, ``sample_rate`` outside (0, 1], ``delta`` outside
            (0, 1), both or neither of ``noise_multiplier`` and ``target_epsilon``, ``target_epsilon``
            without ``rounds``, a non-positive ``noise_multiplier``/``target_epsilon``, an unknown
            ``accountant``.
        ModuleNotFoundError: Opacus is not installed (names the ``dp`` extra).

    Examples:
        >>> dp = ClientDP(clip_norm=1.0, sample_rate=1.0, noise_multiplier=5.0, seed=0)
        >>> clients = dp.sample_clients(round=0, num_clients=2)
        >>> new = dp.aggregate({"w": torch.zeros(2)}, [{"w": torch.ones(2)}] * len(clients), 0, 2)
        >>> dp.rounds_accounted, dp.epsilon == epsilon_spent(5.0, 1.0, 1, 1e-5)
        (1, True)
    """

    def __init__(
        self,
        clip_norm: float,
        sample_rate: float,
        delta: float = 1e-5,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        rounds: int | None = None,
        accountant: Literal["rdp", "prv"] = "rdp",
        seed: int | None = None,
    ) -> None:
        if not (isinstance(clip_norm, (int, float)) and clip_norm > 0 and math.isfinite(clip_norm)):
            raise ValueError(f"`clip_norm` must be a finite number > 0, got {clip_norm!r}.")
        if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
            raise ValueError(f"`sample_rate` must be in (0, 1], got {sample_rate!r}.")
        if not (isinstance(delta, (int, float)) and 0 < delta < 1):
            raise ValueError(f"`delta` must be in (0, 1), got {delta!r}.")
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"`accountant` must be one of {list(ACCOUNTANTS)}, got {accountant!r}.")
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError(
                "Give exactly one of `noise_multiplier` and `target_epsilon` (to calibrate it), got "
                f"noise_multiplier={noise_multiplier!r} and target_epsilon={target_epsilon!r}."
            )
        if noise_multiplier is not None and not (
            isinstance(noise_multiplier, (int, float)) and noise_multiplier > 0
        ):
            raise ValueError(f"`noise_multiplier` must be > 0, got {noise_multiplier!r}.")
        if target_epsilon is not None:
            if not (isinstance(target_epsilon, (int, float)) and target_epsilon > 0):
                raise ValueError(f"`target_epsilon` must be > 0, got {target_epsilon!r}.")
            if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
                raise ValueError(
                    f"`target_epsilon` needs `rounds` (a positive integer: the rounds the budget covers), got {rounds!r}."
                )
        self.clip_norm, self.sample_rate, self.delta = float(clip_norm), float(sample_rate), float(delta)
        self.accountant_kind = accountant
        self.target_epsilon, self.rounds = target_epsilon, rounds
        if noise_multiplier is None:
            noise_multiplier = calibrate_noise_multiplier(
                target_epsilon, delta, sample_rate, rounds, accountant
            )
        self.noise_multiplier = float(noise_multiplier)
        # a secret seed is not written to checkpoints (whoever holds the noise could remove it)
        self.fixed_seed = seed is not None
        self.seed = int(seed) if seed is not None else secrets.randbits(62)
        self.accountant = _accountant(accountant)
        #: per accounted round: epsilon after it, participants, clipped participants
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ mechanism
    def _generator(self, round: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + round) * 2 + stream)

    def sample_clients(self, round: int, num_clients: int) -> list[int]:
        """Poisson sampling: each client joins round ``round`` with probability ``sample_rate`` (may be empty)."""
        u = torch.rand(num_clients, generator=self._generator(round, 0))
        return torch.nonzero(u < self.sample_rate).flatten().tolist()

    def aggregate(
        self,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[Mapping[str, torch.Tensor]],
        round: int,
        num_clients: int,
    ) -> StateDict:
        """The noisy DP-FedAvg average of ``updates`` (the participants' trained states) and one accounted step.

        Raises:
            ValueError: a non-floating tensor in the state; a round accounted twice or out of order.
        """
        if round != self.rounds_accounted:
            raise ValueError(
                f"Round {round} cannot be aggregated: the accountant has counted rounds 0..{self.rounds_accounted - 1} "
                f"(expected round {self.rounds_accounted}); every round is one step of the mechanism."
            )
        expected = self.sample_rate * num_clients
        new, norms = dp_fedavg_average(
            global_state,
            updates,
            self.clip_norm,
            self.noise_multiplier,
            expected,
            self._generator(round, 1),
        )
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.history.append(
            {
                "round": int(round),
                "epsilon": self.epsilon,
                "participants": len(updates),
                "clipped": sum(n > self.clip_norm for n in norms),
                "max_update_norm": max(norms) if norms else 0.0,
            }
        )
        return new

    # ------------------------------------------------------------------ accounting
    @property
    def rounds_accounted(self) -> int:
        return sum(int(h[2]) for h in self.accountant.history)

    @property
    def epsilon(self) -> float:
        """The epsilon spent so far at ``delta``, as the accountant computes it (0 before the first round)."""
        if not self.accountant.history:
            return 0.0
        key = tuple(tuple(h) for h in self.accountant.history)
        # the accountant's computation is not free: once per accounted step
        if getattr(self, "_epsilon_key", None) != key:
            self._epsilon_value = float(self.accountant.get_epsilon(delta=self.delta))
            self._epsilon_key = key
        return self._epsilon_value

    def report(self) -> dict[str, float]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "clip_norm": self.clip_norm,
            "rounds": float(self.rounds_accounted),
        }

    def state_dict(self) -> dict[str, Any]:
        """Primitives only (``weights_only`` loads): the mechanism, the accountant's history, the round log."""
        return {
            "accountant": self.accountant_kind,
            "accountant_history": [[float(z), float(q), int(t)] for z, q, t in self.accountant.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "clip_norm": self.clip_norm,
            "delta": self.delta,
            "seed": self.seed if self.fixed_seed else None,
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the accounting of a checkpoint (the mechanism must be the one this object runs).

        Raises:
            ValueError: a checkpoint of another accountant, noise multiplier, sample rate, clip norm or delta.
        """
        for key, mine in (
            ("accountant", self.accountant_kind),
            ("noise_multiplier", self.noise_multiplier),
            ("sample_rate", self.sample_rate),
            ("clip_norm", self.clip_norm),
            ("delta", self.delta),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"The checkpoint's privacy mechanism has {key}={state[key]!r}, this ClientDP has {mine!r}: "
                    "resume with the same mechanism (its accounting continues from the checkpoint)."
                )
        self.accountant.history = [(float(z), float(q), int(t)) for z, q, t in state["accountant_history"]]
        if state["seed"] is not None:
            self.seed, self.fixed_seed = int(state["seed"]), True
        self.history = [dict(h) for h in state["history"]]
