"""FederatedSimulation: many clients, one process. Rounds of client sampling, local ``Trainer.fit``,
aggregation, evaluation and an atomic checkpoint of the whole federated state."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch

from lightning_addons._progress import Progress
from lightning_addons._validate import positive_int
from lightning_addons.federated.data import ClientDataModule, FederatedDataModule
from lightning_addons.federated.meter import CommunicationMeter
from lightning_addons.federated.quiet import quiet_lightning as _quiet_lightning
from lightning_addons.integrity import load_verified, save_verified, state_digest
from lightning_addons.strategies.aggregation import Aggregator, InvalidClientUpdate, validate_update
from lightning_addons.strategies.privacy import ClientDP
from lightning_addons.strategies.state import StateDict, get_federated_state, load_federated_state

log = logging.getLogger(__name__)

#: Trainer arguments the runner sets itself for local client training.
_RESERVED_TRAINER_KWARGS = (
    "max_epochs",
    "max_steps",
    "logger",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "num_sanity_val_steps",
    "limit_val_batches",
    "default_root_dir",
    "strategy",
    "devices",
)
CHECKPOINT_NAME = "federated_state.pt"
#: How to start over instead of resuming (appended to every resume error).
FRESH_START = (
    "To start this run from scratch instead, pass `--no-resume` (lightning-addons federate) or "
    "`fit(resume=False)` (it overwrites the checkpoint), or use another `checkpoint_dir`."
)
#: Arguments left out of the run fingerprint: they change how a run is shown or how long it runs, not its
#: rounds' results (``rounds`` may grow on resume: round ``r`` does not depend on the total).
_NOT_FINGERPRINTED = ("rounds", "checkpoint_dir", "logger", "progress_bar", "callbacks")


class ResumeMismatchError(ValueError):
    """The checkpoint in ``checkpoint_dir`` was written by a run with another configuration."""


def _describe(value: Any) -> Any:
    """A deterministic, JSON-like description of a config value (no memory addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"sha256:{state_digest(value)[:16]}"
    hparams = getattr(value, "hparams", None)
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(hparams, Mapping) and hparams:
        return {"class": name, "hparams": _describe(dict(hparams))}
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    return f"{name}: {text}" if not text.startswith(type(value).__name__) else text


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    else:
        out[prefix] = repr(value)


def _callback_settings(callback: Any) -> dict[str, Any]:
    """A client callback's class and public primitive settings (not its changing tensors)."""
    settings = {
        k: v
        for k, v in sorted(vars(callback).items())
        if not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str)))
    }
    return {"class": f"{type(callback).__module__}.{type(callback).__qualname__}", **settings}


def _client_fingerprint(dm: Any) -> dict[str, Any]:
    """Size, sampler seed, partition indices, labels and the first/last training items of one client."""
    train = getattr(dm, "train_set", None)
    info: dict[str, Any] = {"class": type(dm).__qualname__, "batch_size": getattr(dm, "batch_size", None)}
    info["seed"], info["client_id"] = getattr(dm, "seed", None), getattr(dm, "client_id", None)
    if train is None:
        return {**info, "loader": _describe(dm)}
    info["num_samples"] = len(train)
    base, indices = train, None
    if isinstance(train, torch.utils.data.Subset):
        base, indices = train.dataset, list(train.indices)
        info["indices"] = f"sha256:{state_digest(indices)[:16]}"
    for attr in ("targets", "y", "labels"):
        labels = getattr(base, attr, None)
        if isinstance(labels, (torch.Tensor, np.ndarray, list)):
            labels = torch.as_tensor(np.asarray(labels))
            picked = labels if indices is None else labels[torch.as_tensor(indices, dtype=torch.long)]
            info["labels"] = f"sha256:{state_digest(picked)[:16]}"
            break
    if len(train):
        ends = [train[0], train[len(train) - 1]]
        try:
            info["items"] = f"sha256:{state_digest(ends)[:16]}"
        except TypeError:
            info["items"] = "unhashable"
    return info


class ClientTimeoutError(RuntimeError):
    """A client exceeded ``client_timeout`` seconds of local training."""


class _Timeout(pl.Callback):
    """Cooperative timeout: checked after every training batch (a single batch cannot be interrupted)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            raise ClientTimeoutError(f"local training exceeded client_timeout={self.seconds} s")


class FederatedCallback:
    """Hooks of :class:`FederatedSimulation` (subclass and override what you need)."""

    def on_round_start(self, simulation: FederatedSimulation, round: int, clients: list[int]) -> None:
        pass

    def on_client_end(
        self, simulation: FederatedSimulation, round: int, client: int, module: pl.LightningModule
    ) -> None:
        pass

    def on_round_end(self, simulation: FederatedSimulation, round: int, metrics: dict[str, float]) -> None:
        pass


@dataclass
class FederatedResult:
    """What :meth:`FederatedSimulation.fit` returns."""

    history: list[dict[str, Any]]
    best_round: int | None
    best_metric: float | None
    global_state: StateDict
    best_state: StateDict
    communication: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    privacy: dict[str, float] = field(default_factory=dict)


def _to_primitive(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


class FederatedSimulation:
    """Federated training of any LightningModule's trainable state, all clients in one process.

    Each round: sample clients (``fraction_fit``, at least ``min_fit_clients``, seeded per round), and for
    each one load the global federated state into the module, run ``Trainer.fit`` for ``local_epochs``
    (no logger, no checkpoints, no progress bar) on the client's datamodule, collect its federated
    state and sample count; validate the updates (NaN/inf, keys, shapes), aggregate with the
    :class:`~lightning_addons.strategies.Aggregator`, evaluate on the server's validation data, keep the
    best round (validation only, never test), log to the Lightning logger, and write an atomic
    checkpoint (round, RNG states, global state, server optimiser, history, best state, bytes).

    Only the federated state (``federated_state_dict()`` or the trainable parameters) is exchanged;
    frozen parameters are never written. Buffers and other trainable tensors outside the federated
    state are reset to the server's copy before each client, so nothing leaks between clients.

    Args:
        module: the LightningModule (its current federated state is the initial global state).
        clients: a :class:`~lightning_addons.federated.FederatedDataModule` or a list of client
            datamodules (each with ``train_dataloader``; ``num_samples`` or a sized train dataset).
        rounds: number of rounds.
        local_epochs: local epochs per round (ignored when ``local_steps`` is set).
        local_steps: local optimiser steps per round instead of epochs (None: use epochs).
        fraction_fit: fraction of clients sampled per round, in (0, 1].
        min_fit_clients: minimum clients per round.
        aggregator: an :class:`~lightning_addons.strategies.Aggregator` (default: FedAvg).
        eval_datamodule: server-side data for validation (``val_dataloader``) and the final test
            (``test_dataloader``); default: the wrapped datamodule of a FederatedDataModule.
        evaluate_every: server evaluation every n rounds (and always after the last round).
        federated_evaluation: also evaluate the global state on every client's own validation split,
            averaged weighted by their sizes (metrics prefixed ``fed_``).
        monitor, mode: metric and direction choosing the best round (a validation metric).
        client_timeout: seconds of local training after which a client is dropped for the round.
        on_invalid_update: ``"drop"`` (log and skip the client for the round) or ``"raise"``.
        checkpoint_dir: where ``federated_state.pt`` is written after each round (None: no checkpoint).
        logger: a Lightning logger receiving per-round metrics (step = round).
        progress_bar: show progress over rounds: a tqdm bar on a terminal, one plain line per round
            otherwise (``LIGHTNING_ADDONS_PROGRESS=bar|plain|off`` overrides); ``False``: nothing.
        trainer_kwargs: extra ``Trainer`` arguments for local training (accelerator, precision,
            gradient_clip_val, ...); the runner sets epochs/logging/checkpointing itself.
        client_callbacks: Lightning callbacks added to every local ``Trainer`` (e.g. ``FedProx``).
        callbacks: :class:`FederatedCallback` hooks.
        seed: seed of client sampling and local training (client ``c`` in round ``r`` trains with
            ``seed + r * num_clients + c``).
        run_config: extra description of the run (e.g. the YAML config it was built from), added to
            its fingerprint.
        privacy: a :class:`~lightning_addons.strategies.privacy.ClientDP` (client-level DP-FedAvg): clients
            are then Poisson-sampled at its ``sample_rate``, updates clipped and the sum noised by it (the
            aggregator's server optimiser still applies), and the spent ``epsilon`` is logged per round
            and kept in checkpoints.

    The checkpoint carries a sha256 of its content (a flipped bit or truncated file is an
    :class:`~lightning_addons.integrity.IntegrityError` naming it) and the run's fingerprint
    (:meth:`fingerprint`: library version, module class, hyper-parameters and initial federated state,
    every client's data and partition, seeds, aggregator, local training and trainer settings). ``fit``
    resumes only a checkpoint with the same fingerprint (announced at WARNING); another one raises
    :class:`ResumeMismatchError` naming the differing keys and how to start fresh.

    Raises:
        ValueError: bad arguments (each message names the argument, the allowed values and the value).

    Examples:
        >>> from lightning_addons.datamodules import DigitsDataModule
        >>> from lightning_addons.modules import ImageClassifier
        >>> from lightning_addons.modules.nn import LeNet5
        >>> fdm = FederatedDataModule(DigitsDataModule(resize=32), num_clients=2, partition="iid")
        >>> sim = FederatedSimulation(ImageClassifier(LeNet5()), fdm, rounds=1, progress_bar=False)
        >>> result = sim.fit()
        >>> result.best_round
        0
    """

    def __init__(
        self,
        module: pl.LightningModule,
        clients: FederatedDataModule | Sequence[pl.LightningDataModule],
        rounds: int = 10,
        local_epochs: int = 1,
        local_steps: int | None = None,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        aggregator: Aggregator | None = None,
        eval_datamodule: pl.LightningDataModule | None = None,
        evaluate_every: int = 1,
        federated_evaluation: bool = False,
        monitor: str = "val_acc",
        mode: Literal["max", "min"] = "max",
        client_timeout: float | None = None,
        on_invalid_update: Literal["drop", "raise"] = "drop",
        checkpoint_dir: str | os.PathLike | None = None,
        logger: Any = None,
        progress_bar: bool = True,
        trainer_kwargs: Mapping[str, Any] | None = None,
        client_callbacks: Sequence[pl.Callback] = (),
        callbacks: Sequence[FederatedCallback] = (),
        seed: int = 0,
        run_config: Mapping[str, Any] | None = None,
        privacy: ClientDP | None = None,
    ) -> None:
        positive_int("rounds", rounds)
        positive_int("local_epochs", local_epochs)
        positive_int("min_fit_clients", min_fit_clients)
        positive_int("evaluate_every", evaluate_every)
        if local_steps is not None:
            positive_int("local_steps", local_steps)
        if not (isinstance(fraction_fit, (int, float)) and 0 < fraction_fit <= 1):
            raise ValueError(f"`fraction_fit` must be in (0, 1], got {fraction_fit!r}.")
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be one of ['max', 'min'], got {mode!r}.")
        if on_invalid_update not in ("drop", "raise"):
            raise ValueError(
                f"`on_invalid_update` must be one of ['drop', 'raise'], got {on_invalid_update!r}."
            )
        if client_timeout is not None and not client_timeout > 0:
            raise ValueError(f"`client_timeout` must be > 0 seconds or None, got {client_timeout!r}.")
        if monitor.startswith("test"):
            raise ValueError(
                f"`monitor` must be a validation metric (the best round never looks at test), got {monitor!r}."
            )
        if privacy is not None:
            if fraction_fit != 1.0 or min_fit_clients != 1:
                raise ValueError(
                    "With `privacy`, clients are Poisson-sampled at `privacy.sample_rate`: leave `fraction_fit`=1.0 "
                    f"and `min_fit_clients`=1, got {fraction_fit!r} and {min_fit_clients!r}."
                )
            if aggregator is not None and (
                aggregator.clip_norm is not None or aggregator.noise_multiplier > 0
            ):
                raise ValueError(
                    "With `privacy`, clipping and noise are the ClientDP's: the `aggregator` must have "
                    f"clip_norm=None and noise_multiplier=0, got {aggregator.clip_norm!r} and {aggregator.noise_multiplier!r}."
                )
            if aggregator is not None and aggregator.rule != "fedavg":
                raise ValueError(
                    "With `privacy`, updates are clipped and averaged by the ClientDP (DP-FedAvg; its clipping "
                    "bounds every client's influence): a robust `aggregator.rule` would be bypassed, so it must "
                    f"be 'fedavg', got {aggregator.rule!r}."
                )
        trainer_kwargs = dict(trainer_kwargs or {})
        reserved = sorted(set(trainer_kwargs) & set(_RESERVED_TRAINER_KWARGS))
        if reserved:
            raise ValueError(
                f"`trainer_kwargs` must not set {reserved}: the runner sets {list(_RESERVED_TRAINER_KWARGS)} itself "
                "(use `local_epochs`/`local_steps`)."
            )
        if isinstance(clients, FederatedDataModule):
            self.federated_datamodule: FederatedDataModule | None = clients
            client_list: list[Any] = list(clients.clients())
            eval_datamodule = eval_datamodule if eval_datamodule is not None else clients.base
        else:
            self.federated_datamodule = None
            client_list = list(clients)
        if not client_list:
            raise ValueError(
                "`clients` is empty: pass a FederatedDataModule or a list of client datamodules."
            )
        if min_fit_clients > len(client_list):
            raise ValueError(f"`min_fit_clients`={min_fit_clients} exceeds the {len(client_list)} clients.")
        self.module = module
        self.clients = client_list
        self.rounds, self.local_epochs, self.local_steps = rounds, local_epochs, local_steps
        self.fraction_fit, self.min_fit_clients = float(fraction_fit), min_fit_clients
        self.aggregator = aggregator if aggregator is not None else Aggregator()
        self.eval_datamodule = eval_datamodule
        self.evaluate_every, self.federated_evaluation = evaluate_every, federated_evaluation
        self.monitor, self.mode = monitor, mode
        self.client_timeout, self.on_invalid_update = client_timeout, on_invalid_update
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        self.logger, self.progress_bar = logger, progress_bar
        self.trainer_kwargs = {"accelerator": "cpu", **trainer_kwargs}
        self.client_callbacks, self.callbacks = list(client_callbacks), list(callbacks)
        self.seed = int(seed)
        self.run_config = dict(run_config or {})
        self.privacy = privacy

        self.global_state: StateDict = get_federated_state(module)
        self._initial_digest = state_digest(self.global_state)
        self._fingerprint: dict[str, str] | None = None
        fed_keys = set(self.global_state)
        # tensors that change in training but are not exchanged (buffers, trainable non-federated tensors)
        self._server_local = {
            k: v.detach().clone()
            for k, v in module.state_dict(keep_vars=True).items()
            if k not in fed_keys and (not isinstance(v, torch.nn.Parameter) or v.requires_grad)
        }
        self.meter = CommunicationMeter.from_module(module)
        self.history: list[dict[str, Any]] = []
        self.best_round: int | None = None
        self.best_metric: float | None = None
        self.best_state: StateDict = {k: v.clone() for k, v in self.global_state.items()}
        self.start_round = 0

    # ------------------------------------------------------------------ helpers
    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def sample_clients(self, round: int) -> list[int]:
        """The clients of a round: ``max(min_fit_clients, ceil(fraction_fit * n))``, seeded by (seed, round)."""
        n = self.num_clients
        if self.privacy is not None:
            return self.privacy.sample_clients(round, n)
        m = min(n, max(self.min_fit_clients, math.ceil(self.fraction_fit * n - 1e-9)))
        if m == n:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + round)
        return sorted(torch.randperm(n, generator=g)[:m].tolist())

    @staticmethod
    def _num_samples(dm: Any) -> int:
        n = getattr(dm, "num_samples", None)
        if isinstance(n, int):
            return n
        return len(dm.train_dataloader().dataset)

    def _restore_module(self, state: Mapping[str, torch.Tensor]) -> None:
        if self._server_local:
            self.module.load_state_dict(self._server_local, strict=False)
        load_federated_state(self.module, state)

    def _trainer(self, max_epochs: int, callbacks: Sequence[pl.Callback], **overrides: Any) -> pl.Trainer:
        kwargs = dict(
            max_epochs=max_epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=tempfile.gettempdir(),
            callbacks=list(callbacks),
        )
        kwargs.update(self.trainer_kwargs)
        kwargs.update(overrides)
        return pl.Trainer(**kwargs)

    def train_client(self, round: int, client: int) -> tuple[StateDict, int]:
        """Local training of one client from the current global state; returns (federated state, samples)."""
        dm = self.clients[client]
        self._restore_module(self.global_state)
        if hasattr(dm, "epoch_offset"):
            dm.epoch_offset = round * self.local_epochs
        pl.seed_everything(self.seed + round * self.num_clients + client, verbose=False)
        callbacks = [_Timeout(self.client_timeout), *self.client_callbacks]
        overrides = {"max_steps": self.local_steps} if self.local_steps is not None else {}
        max_epochs = -1 if self.local_steps is not None else self.local_epochs
        with _quiet_lightning():
            trainer = self._trainer(max_epochs, callbacks, **overrides)
            try:
                if isinstance(dm, pl.LightningDataModule):
                    trainer.fit(self.module, datamodule=dm)
                else:  # a bare DataLoader
                    trainer.fit(self.module, train_dataloaders=dm)
            finally:
                # Lightning leaves `dm.trainer` set: every client ever sampled would keep its last Trainer (its
                # optimiser state, logged results) alive, so memory would grow with the number of clients.
                if isinstance(dm, pl.LightningDataModule):
                    dm.trainer = None
        for cb in self.callbacks:
            cb.on_client_end(self, round, client, self.module)
        return get_federated_state(self.module), self._num_samples(dm)

    def evaluate(
        self, state: Mapping[str, torch.Tensor] | None = None, stage: Literal["val", "test"] = "val"
    ) -> dict[str, float]:
        """Server-side evaluation of a global state (default: the current one) on ``eval_datamodule``."""
        if self.eval_datamodule is None:
            return {}
        self._restore_module(self.global_state if state is None else state)
        with _quiet_lightning():
            trainer = self._trainer(1, [], limit_val_batches=1.0)
            fn = trainer.validate if stage == "val" else trainer.test
            out = fn(self.module, datamodule=self.eval_datamodule, verbose=False)
        return {k: float(v) for k, v in (out[0] if out else {}).items()}

    def federated_evaluate(self) -> dict[str, float]:
        """The global state on every client's own validation split, averaged weighted by split size."""
        totals: dict[str, float] = {}
        weight = 0
        for dm in self.clients:
            val = getattr(dm, "val_set", None)
            if val is None or len(val) == 0:
                continue
            self._restore_module(self.global_state)
            with _quiet_lightning():
                out = self._trainer(1, [], limit_val_batches=1.0).validate(
                    self.module, datamodule=dm, verbose=False
                )
            dm.trainer = None  # no Trainer kept alive per client (see train_client)
            for k, v in (out[0] if out else {}).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(val)
            weight += len(val)
        return {f"fed_{k}": v / weight for k, v in totals.items()} if weight else {}

    def _is_better(self, value: float) -> bool:
        if self.best_metric is None or not math.isfinite(self.best_metric):
            return math.isfinite(value)
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The whole federated state: tensors and primitives only (``torch.load(weights_only=True)`` works)."""
        np_state = np.random.get_state()
        return {
            "fingerprint": self.fingerprint(),
            "round": self.start_round,
            "num_clients": self.num_clients,
            "seed": self.seed,
            "global_state": {k: v.clone() for k, v in self.global_state.items()},
            "best_state": {k: v.clone() for k, v in self.best_state.items()},
            "best_round": self.best_round,
            "best_metric": self.best_metric,
            "aggregator": self.aggregator.state_dict(),
            "history": copy.deepcopy(self.history),
            "meter": self.meter.state_dict(),
            "privacy": self.privacy.state_dict() if self.privacy is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": list(random.getstate()[1]) + [random.getstate()[2]],
                "python_version": random.getstate()[0],
                "numpy": [
                    np_state[0],
                    torch.from_numpy(np_state[1].astype(np.int64)),
                    *map(_to_primitive, np_state[2:]),
                ],
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["num_clients"]) != self.num_clients:
            raise ValueError(
                f"Checkpoint is for {state['num_clients']} clients, this simulation has {self.num_clients}."
            )
        ref = self.global_state
        try:
            validate_update(ref, state["global_state"], client="checkpoint")
        except InvalidClientUpdate as err:
            raise ValueError(f"The checkpoint does not match this module's federated state: {err}") from None
        dp_state = state.get("privacy")
        if (dp_state is None) != (self.privacy is None):
            raise ValueError(
                f"The checkpoint was written {'without' if dp_state is None else 'with'} client-level DP and this "
                f"simulation runs {'with' if dp_state is None else 'without'} it: resume with the same `privacy`."
            )
        if self.privacy is not None:
            self.privacy.load_state_dict(dp_state)
        self.start_round = int(state["round"])
        self.global_state = {k: v.clone() for k, v in state["global_state"].items()}
        self.best_state = {k: v.clone() for k, v in state["best_state"].items()}
        self.best_round, self.best_metric = state["best_round"], state["best_metric"]
        self.aggregator.load_state_dict(state["aggregator"])
        self.history = list(state["history"])
        self.meter.load_state_dict(state["meter"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        py = rng["python"]
        random.setstate((rng["python_version"], tuple(int(x) for x in py[:-1]), py[-1]))
        npy = rng["numpy"]
        np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), *npy[2:]))
        load_federated_state(self.module, self.global_state)

    def fingerprint(self) -> dict[str, str]:
        """Everything that determines this run's result, flattened to ``{"dotted.key": repr}``.

        Compared key by key on resume. Left out: ``rounds`` (a run may be extended), where and how it
        logs (``checkpoint_dir``, ``logger``, ``progress_bar``, runner ``callbacks``).
        """
        if self._fingerprint is None:
            import lightning_addons

            desc: dict[str, Any] = {
                "library_version": lightning_addons.__version__,
                "module": {
                    "class": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
                    "hparams": _describe(dict(getattr(self.module, "hparams", {}) or {})),
                    "initial_state": f"sha256:{self._initial_digest[:16]}",
                },
                "federation": {
                    "num_clients": self.num_clients,
                    "seed": self.seed,
                    "local_epochs": self.local_epochs,
                    "local_steps": self.local_steps,
                    "fraction_fit": self.fraction_fit,
                    "min_fit_clients": self.min_fit_clients,
                    "evaluate_every": self.evaluate_every,
                    "federated_evaluation": self.federated_evaluation,
                    "monitor": self.monitor,
                    "mode": self.mode,
                    "client_timeout": self.client_timeout,
                    "on_invalid_update": self.on_invalid_update,
                },
                "aggregator": self.aggregator.config(),
                "trainer": _describe(self.trainer_kwargs),
                "client_callbacks": [_callback_settings(cb) for cb in self.client_callbacks],
                "eval_data": _describe(self.eval_datamodule),
                "clients": {str(i): _client_fingerprint(dm) for i, dm in enumerate(self.clients)},
            }
            fdm = self.federated_datamodule
            if fdm is not None:
                desc["partition"] = {
                    "method": fdm.method,
                    "partition_seed": fdm.partition_seed,
                    **fdm.partition_kwargs,
                    "local_val_fraction": fdm.local_val_fraction,
                    "data": _describe(fdm.base),
                }
            if self.run_config:
                desc["config"] = _describe(self.run_config)
            flat: dict[str, str] = {}
            _flatten("", desc, flat)
            self._fingerprint = flat
        return dict(self._fingerprint)

    def check_fingerprint(self, stored: Mapping[str, str] | None, source: object = "the checkpoint") -> None:
        """Raise :class:`ResumeMismatchError` unless ``stored`` equals this run's :meth:`fingerprint`."""
        if not isinstance(stored, Mapping):
            raise ResumeMismatchError(
                f"{source} carries no run fingerprint (written by an older version), so it cannot be checked "
                f"against this run's configuration. {FRESH_START}"
            )
        current = self.fingerprint()
        # settings first, then what they derive (the clients' data follows from the partition settings)
        differ = sorted(
            (k for k in set(stored) | set(current) if stored.get(k) != current.get(k)),
            key=lambda k: (k.startswith("clients."), k),
        )
        if differ:

            def short(v: str | None) -> str:
                v = "(absent)" if v is None else v
                return v if len(v) <= 60 else v[:57] + "..."

            shown = "; ".join(
                f"{k}: checkpoint {short(stored.get(k))}, now {short(current.get(k))}" for k in differ[:8]
            )
            more = f" (and {len(differ) - 8} more)" if len(differ) > 8 else ""
            raise ResumeMismatchError(
                f"Refusing to resume from {source}: it was written by a run with another configuration. "
                f"Differing keys: {differ[:8]}{more}. {shown}. {FRESH_START}"
            )

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            save_verified(self.state_dict(), self.checkpoint_path)

    def maybe_resume(self) -> bool:
        """Load ``checkpoint_dir/federated_state.pt`` if it exists; returns whether it did.

        Raises:
            IntegrityError: the checkpoint is truncated, unreadable or its content digest does not match.
            ResumeMismatchError: it was written by a run with another fingerprint.
        """
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        state = load_verified(self.checkpoint_path, fresh_start_hint=FRESH_START)
        self.check_fingerprint(state.get("fingerprint"), source=str(self.checkpoint_path))
        if int(state["round"]) > self.rounds:
            raise ResumeMismatchError(
                f"Refusing to resume from {self.checkpoint_path}: it holds {state['round']} finished rounds, this run "
                f"asks for rounds={self.rounds} (its result would be the longer run's). Pass rounds >= "
                f"{state['round']} to continue it. {FRESH_START}"
            )
        self.load_state_dict(state)
        log.warning(
            "Resuming the federated run from %s after round %d of %d (same configuration fingerprint). %s",
            self.checkpoint_path,
            self.start_round,
            self.rounds,
            FRESH_START,
        )
        return True

    # ------------------------------------------------------------------ the loop
    def run_round(self, rnd: int) -> dict[str, Any]:
        """One round: sample, train, validate updates, aggregate, evaluate. Returns the round's record."""
        sampled = self.sample_clients(rnd)
        for cb in self.callbacks:
            cb.on_round_start(self, rnd, sampled)
        t0 = time.perf_counter()
        updates, weights, ids, dropped, rejected = [], [], [], [], []
        for cid in sampled:
            down = self.global_state
            try:
                state, n = self.train_client(rnd, cid)
            except Exception as err:  # a failing client must not stop the federation
                msg = f"{type(err).__name__}: {err}"
                log.warning("Round %d: client %d dropped (%s)", rnd, cid, msg)
                dropped.append({"client": cid, "reason": msg})
                self.meter.record(rnd, cid, down, 0)
                continue
            try:
                validate_update(self.global_state, state, cid)
            except InvalidClientUpdate as err:
                if self.on_invalid_update == "raise":
                    raise
                log.warning(
                    "Round %d: update rejected, not aggregated (client %s, key %s, reason %s): %s",
                    rnd,
                    cid,
                    err.key,
                    err.reason,
                    err,
                )
                dropped.append({"client": cid, "reason": str(err)})
                rejected.append({"client": cid, "key": err.key, "reason": err.reason, "detail": str(err)})
                self.meter.record(rnd, cid, down, state)
                continue
            self.meter.record(rnd, cid, down, state)
            updates.append(state)
            weights.append(n)
            ids.append(cid)
        if self.privacy is not None:  # DP-FedAvg runs (and is accounted) even when no update survived
            noisy_average = self.privacy.aggregate(self.global_state, updates, rnd, self.num_clients)
            self.global_state = self.aggregator.server.step(self.global_state, noisy_average)
        elif updates:
            self.global_state = self.aggregator.aggregate(self.global_state, updates, weights, ids)
            rejected.extend(dict(r) for r in self.aggregator.last_rejections)  # logged by the aggregator
        else:
            log.warning("Round %d: no client update survived; the global state is unchanged.", rnd)
        record: dict[str, Any] = {
            "round": rnd,
            "clients": ids,
            "num_samples": [int(w) for w in weights],
            "dropped": dropped,
            "rejected": rejected,
            "train_seconds": time.perf_counter() - t0,
        }
        if self.privacy is not None:
            record["privacy"] = self.privacy.report()
        metrics: dict[str, float] = {}
        if (rnd + 1) % self.evaluate_every == 0 or rnd == self.rounds - 1:
            metrics.update(self.evaluate(stage="val"))
            if self.federated_evaluation:
                metrics.update(self.federated_evaluate())
        if self.monitor in metrics and self._is_better(metrics[self.monitor]):
            self.best_round, self.best_metric = rnd, metrics[self.monitor]
            self.best_state = {k: v.clone() for k, v in self.global_state.items()}
        elif self.best_round is None and self.monitor not in metrics and rnd == self.rounds - 1:
            self.best_round = rnd  # nothing to monitor: the last round is the result
            self.best_state = {k: v.clone() for k, v in self.global_state.items()}
        record["metrics"] = metrics
        record["bytes"] = self.meter.per_round().get(rnd, {"down": 0, "up": 0})
        return record

    def fit(self, resume: bool = True) -> FederatedResult:
        """Run the remaining rounds (resuming from ``checkpoint_dir`` if ``resume``), then test the best state.

        Raises:
            InvalidClientUpdate: with ``on_invalid_update="raise"``.
            IntegrityError: the checkpoint to resume is truncated, unreadable or corrupt.
            ResumeMismatchError: the checkpoint was written by a run with another configuration.
        """
        self.fingerprint()  # taken before any training changes the module or the clients
        if resume:
            self.maybe_resume()
        rounds = range(self.start_round, self.rounds)
        bar = Progress(self.rounds, "federated rounds", "round", self.start_round, mode=self.progress_bar)
        try:
            for rnd in rounds:
                record = self.run_round(rnd)
                self.history.append(record)
                self.start_round = rnd + 1
                self.save_checkpoint()
                metrics = record["metrics"]
                log_metrics = {
                    **metrics,
                    "clients": float(len(record["clients"])),
                    "dropped": float(len(record["dropped"])),
                    "bytes_total": float(self.meter.total_bytes),
                    **rejection_metrics(record["rejected"]),
                }
                if "privacy" in record:
                    log_metrics["epsilon"] = record["privacy"]["epsilon"]
                if self.logger is not None:
                    self.logger.log_metrics(log_metrics, step=rnd)
                for cb in self.callbacks:
                    cb.on_round_end(self, rnd, metrics)
                shown = {self.monitor: metrics[self.monitor]} if self.monitor in metrics else {}
                bar.update(1, postfix={**shown, "clients": len(record["clients"])})
        finally:
            bar.close()
        test_metrics = self.test()
        if self.logger is not None:
            if test_metrics:
                self.logger.log_metrics(test_metrics, step=self.rounds)
            self.logger.save()
        self._restore_module(self.best_state)
        return FederatedResult(
            history=self.history,
            best_round=self.best_round,
            best_metric=self.best_metric,
            global_state={k: v.clone() for k, v in self.global_state.items()},
            best_state={k: v.clone() for k, v in self.best_state.items()},
            communication=self.meter.summary(),
            test_metrics=test_metrics,
            privacy=self.privacy.report() if self.privacy is not None else {},
        )

    def test(self) -> dict[str, float]:
        """Test metrics of the best round's global state (chosen on validation) on ``eval_datamodule``."""
        if self.eval_datamodule is None or not hasattr(self.eval_datamodule, "test_dataloader"):
            return {}
        return self.evaluate(self.best_state, stage="test")


def rejection_metrics(rejected: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per-round metrics of rejected updates: ``rejected_updates`` and one ``rejected_<reason>`` count per reason.

    Examples:
        >>> rejection_metrics([{"client": 3, "key": None, "reason": "norm_outlier"}])
        {'rejected_updates': 1.0, 'rejected_norm_outlier': 1.0}
    """
    out = {"rejected_updates": float(len(rejected))}
    for r in rejected:
        name = f"rejected_{r['reason']}"
        out[name] = out.get(name, 0.0) + 1.0
    return out


def local_only(
    module: pl.LightningModule,
    clients: FederatedDataModule | Sequence[ClientDataModule],
    epochs: int,
    eval_datamodule: pl.LightningDataModule | None = None,
    seed: int = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Baseline: every client trains alone for ``epochs`` from the same start; test metrics per client and mean.

    ``progress_bar=True`` shows one step per client (a bar on a terminal, a plain line otherwise).

    Examples:
        >>> from lightning_addons.datamodules import DigitsDataModule
        >>> from lightning_addons.modules import ImageClassifier
        >>> from lightning_addons.modules.nn import LeNet5
        >>> fdm = FederatedDataModule(DigitsDataModule(resize=32), num_clients=2)
        >>> out = local_only(ImageClassifier(LeNet5()), fdm, epochs=1)
        >>> len(out["per_client"])
        2
    """
    sim = FederatedSimulation(
        module,
        clients,
        rounds=1,
        local_epochs=epochs,
        eval_datamodule=eval_datamodule,
        progress_bar=False,
        trainer_kwargs=trainer_kwargs,
        seed=seed,
    )
    start = {k: v.clone() for k, v in sim.global_state.items()}
    per_client = []
    with Progress(sim.num_clients, "local-only clients", "client", mode=progress_bar) as bar:
        for cid in range(sim.num_clients):
            sim.global_state = {k: v.clone() for k, v in start.items()}
            state, _ = sim.train_client(0, cid)
            per_client.append(sim.evaluate(state, stage="test"))
            bar.update(1, postfix={k: v for k, v in per_client[-1].items() if k.endswith("acc")})
    sim._restore_module(start)
    keys = per_client[0].keys() if per_client else []
    return {"per_client": per_client, "mean": {k: float(np.mean([m[k] for m in per_client])) for k in keys}}
