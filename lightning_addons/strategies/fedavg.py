"""``Trainer(strategy="fedavg")``: each DDP rank is a federated client; no gradient all-reduce.

Ranks train independently on their own data; every ``round_every_n_epochs`` epochs (or
``round_every_n_steps`` optimiser steps) the federated state is averaged across ranks, weighted by
the ranks' local sample counts, with the same :class:`~lightning_addons.strategies.Aggregator` code as
the in-process simulation (clipping, noise and server optimisers included). Only the federated state
(``federated_state_dict()`` or the trainable parameters) is communicated.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DistributedSampler

from lightning_addons.strategies.aggregation import (
    Aggregator,
    InvalidClientUpdate,
    clip_update,
    global_norm,
    screen_norms,
    validate_update,
)
from lightning_addons.strategies.state import StateDict, get_federated_state, load_federated_state

log = logging.getLogger(__name__)


class FedAvgStrategy(DDPStrategy):
    """Federated averaging across DDP ranks (CPU/gloo or GPU/NCCL, single or multi-node).

    Registered as ``"fedavg"`` (launch with ``popen`` like ``"ddp"``), ``"fedavg_spawn"`` and
    ``"fedavg_fork"`` once :mod:`lightning_addons.strategies.fedavg` is imported (also by
    ``import lightning_addons.strategies`` when Lightning is already loaded, and by the CLI).

    Each rank must load its own client's data (e.g.
    :class:`~lightning_addons.federated.FederatedDataModule` with ``client_id=None`` picks
    ``trainer.global_rank``); build the Trainer with ``use_distributed_sampler=False`` so a rank sees its
    whole partition (a ``DistributedSampler`` found at fit start is an error). Ranks start from rank 0's
    federated state (broadcast). At a round boundary each rank validates its local state (a NaN/inf or
    wrong-dtype state gets weight 0 and is logged, never averaged in; so does an update far larger than the
    other ranks', see ``max_norm_ratio``), the contributions are summed with one all-reduce per tensor, and
    the optimiser state is cleared (``reset_optimizer_state``) so each round starts like a fresh local
    ``Trainer.fit``.

    With rounds every ``n`` epochs, ranks may hold different numbers of batches. With rounds every ``n``
    steps, set ``max_steps`` so that all ranks run the same number of steps (each round is a collective).

    Args:
        round_every_n_epochs: epochs per round (ignored if ``round_every_n_steps`` is set).
        round_every_n_steps: optimiser steps per round (None: epoch rounds).
        weighting: ``"num_samples"`` (FedAvg) or ``"uniform"``.
        server_optimizer, server_lr, server_momentum: see :class:`~lightning_addons.strategies.ServerOptimizer`.
        clip_norm, noise_multiplier: the clipping + Gaussian-noise knob of
            :class:`~lightning_addons.strategies.Aggregator` (not a privacy guarantee).
        reset_optimizer_state: clear the optimiser state (Adam moments, momentum) at every round.
        seed: seed of the noise generator (same on every rank).
        max_norm_ratio, on_outlier: the norm guard of :class:`~lightning_addons.strategies.Aggregator`:
            a rank whose update norm exceeds ``max_norm_ratio`` x the (lower) median of the ranks' norms
            gets weight 0 (``"reject"``) or is clipped to that bound (``"clip"``); None turns it off.
        **kwargs: passed to :class:`~lightning.pytorch.strategies.DDPStrategy` (``start_method``,
            ``process_group_backend``, ``timeout``, ...).

    Raises:
        ValueError: non-positive round lengths, unknown weighting/server optimiser.

    Examples:
        >>> import lightning_addons.strategies.fedavg  # registers "fedavg"
        >>> strategy = FedAvgStrategy(round_every_n_epochs=2, start_method="fork")
        >>> strategy.round_every_n_epochs
        2
    """

    strategy_name = "fedavg"

    def __init__(
        self,
        round_every_n_epochs: int = 1,
        round_every_n_steps: int | None = None,
        weighting: Literal["num_samples", "uniform"] = "num_samples",
        server_optimizer: Literal["none", "fedavgm", "fedadam"] = "none",
        server_lr: float = 1.0,
        server_momentum: float = 0.9,
        clip_norm: float | None = None,
        noise_multiplier: float = 0.0,
        reset_optimizer_state: bool = True,
        seed: int = 0,
        max_norm_ratio: float | None = 10.0,
        on_outlier: Literal["reject", "clip"] = "reject",
        **kwargs: Any,
    ) -> None:
        if not isinstance(round_every_n_epochs, int) or round_every_n_epochs < 1:
            raise ValueError(
                f"`round_every_n_epochs` must be a positive integer, got {round_every_n_epochs!r}."
            )
        if round_every_n_steps is not None and (
            not isinstance(round_every_n_steps, int) or round_every_n_steps < 1
        ):
            raise ValueError(
                f"`round_every_n_steps` must be a positive integer or None, got {round_every_n_steps!r}."
            )
        super().__init__(**kwargs)
        self.round_every_n_epochs = round_every_n_epochs
        self.round_every_n_steps = round_every_n_steps
        self.reset_optimizer_state = reset_optimizer_state
        self.aggregator = Aggregator(
            weighting=weighting,
            server_optimizer=server_optimizer,
            server_lr=server_lr,
            server_momentum=server_momentum,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            seed=seed,
            max_norm_ratio=max_norm_ratio,
            on_outlier=on_outlier,
        )
        self.rounds_done = 0
        self._round_start: StateDict | None = None
        self._num_samples: int | None = None
        self._steps_in_round = 0

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        for name, start_method in (("fedavg", "popen"), ("fedavg_spawn", "spawn"), ("fedavg_fork", "fork")):
            if name not in strategy_registry:
                strategy_registry.register(
                    name,
                    cls,
                    description=f"Federated averaging over DDP ranks, `start_method` {start_method!r}",
                    start_method=start_method,
                )

    # ------------------------------------------------------------------ no DDP wrapper, no sampler injection
    def setup(self, trainer: pl.Trainer) -> None:
        # Lightning >= 2.5 broadcasts a SIGTERM flag from rank 0 before *every* training batch. Clients hold
        # different numbers of batches, so that per-batch collective would deadlock; fedavg ranks only meet at
        # round boundaries (and at epoch-end metric syncs). SIGTERM is then handled by each rank on its own.
        # There is no public switch for this: if Lightning renames the internal, fail here rather than
        # deadlock later.
        epoch_loop = trainer.fit_loop.epoch_loop
        if not callable(getattr(epoch_loop, "_broadcast_sigterm_tensor", None)):
            import lightning

            raise RuntimeError(
                f"FedAvgStrategy needs Lightning's `_TrainingEpochLoop._broadcast_sigterm_tensor` (Lightning 2.5-2.6) "
                f"to skip the per-batch SIGTERM broadcast, which deadlocks clients with different numbers of "
                f"batches; Lightning {lightning.__version__} has no such method. Install a supported Lightning "
                f"version (pip install 'lightning>=2.5,<2.7') or report this incompatibility."
            )
        epoch_loop._broadcast_sigterm_tensor = lambda: None
        super().setup(trainer)

    def process_dataloader(self, dataloader: Any) -> Any:
        # Every rank is a client with its own partition: a DistributedSampler would split it again.
        # Lightning injects one unless the Trainer was built with use_distributed_sampler=False.
        sampler = getattr(dataloader, "sampler", None)
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        if isinstance(sampler, DistributedSampler) or isinstance(
            getattr(batch_sampler, "sampler", None), DistributedSampler
        ):
            raise ValueError(
                "FedAvgStrategy: each rank is a federated client with its own data, but the data loader has a "
                "DistributedSampler that would split it again across ranks. Build the Trainer with "
                "`Trainer(strategy=..., use_distributed_sampler=False)` (and do not add a DistributedSampler)."
            )
        return super().process_dataloader(dataloader)

    @property
    def round_start_state(self) -> StateDict | None:
        """The federated state at the start of the current round (None before training starts); read-only
        for callbacks such as :class:`~lightning_addons.strategies.FedProx`."""
        return self._round_start

    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: gradients are never all-reduced; ranks train independently.
        assert isinstance(self.model, pl.LightningModule)

    # ------------------------------------------------------------------ rounds
    def on_train_start(self) -> None:
        super().on_train_start()
        module = self.lightning_module
        state = get_federated_state(module)
        if dist.is_available() and dist.is_initialized():
            for key in sorted(state):
                t = state[key].to(self.root_device)
                dist.broadcast(t, src=0)
                state[key] = t
            load_federated_state(module, state)
        self._round_start = get_federated_state(module)
        self._steps_in_round = 0

    def _local_num_samples(self) -> int:
        if self._num_samples is None:
            trainer = self.lightning_module.trainer
            n = 0
            loader = trainer.train_dataloader
            try:
                n = len(loader.dataset)  # type: ignore[union-attr]
            except (AttributeError, TypeError):
                n = int(trainer.num_training_batches)
            self._num_samples = max(int(n), 0)
        return self._num_samples

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self._steps_in_round += 1
        trainer = self.lightning_module.trainer
        if self.round_every_n_steps is not None:
            boundary = (trainer.global_step + 1) % self.round_every_n_steps == 0
        else:
            last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            boundary = last_batch and (trainer.current_epoch + 1) % self.round_every_n_epochs == 0
        if boundary:
            self.federated_round()
        return output

    def on_train_end(self) -> None:
        # a last partial round (max_epochs not a multiple of the round length) is averaged too
        if self.round_every_n_steps is None and self._steps_in_round > 0:
            self.federated_round()
        super().on_train_end()

    @torch.no_grad()
    def federated_round(self) -> None:
        """Average the federated state across ranks now (a collective: every rank must call it)."""
        module = self.lightning_module
        local = get_federated_state(module)
        assert self._round_start is not None
        global_state = self._round_start
        weight = float(self.aggregator.weights([self._local_num_samples()])[0])
        norm = math.inf
        try:
            validate_update(global_state, local, client=f"rank {self.global_rank}")
            delta = {k: local[k] - v for k, v in global_state.items() if v.is_floating_point()}
            norm = global_norm(delta)
            contribution = self.aggregator.contribution(global_state, local)
        except InvalidClientUpdate as err:
            log.warning("%s: not averaged in this round", err)
            weight = 0.0
            contribution = {k: torch.zeros_like(v) for k, v in global_state.items()}
        distributed = dist.is_available() and dist.is_initialized()
        ratio = self.aggregator.max_norm_ratio
        if distributed and ratio is not None and dist.get_world_size() > 1:
            # the norm guard of Aggregator.aggregate: every rank decides from the same gathered norms
            mine = torch.tensor([norm], dtype=torch.float64, device=self.root_device)
            norms = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(norms, mine)
            med, flags = screen_norms([float(n) for n in norms], ratio)
            if weight > 0 and flags[self.global_rank]:
                detail = f"update norm {norm:.4g} > {ratio:g} x the round's median norm {med:.4g}"
                if self.aggregator.on_outlier == "clip" and math.isfinite(norm):
                    clipped, _ = clip_update(delta, ratio * med)
                    local = {k: (global_state[k] + clipped[k]) if k in clipped else local[k] for k in local}
                    contribution = self.aggregator.contribution(global_state, local)
                    log.warning("fedavg: rank %d, key *: norm_outlier_clipped (%s)", self.global_rank, detail)
                else:
                    log.warning(
                        "fedavg: rank %d, key *: norm_outlier (%s; not averaged)", self.global_rank, detail
                    )
                    weight = 0.0
                    contribution = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total = torch.tensor(
            [weight, 1.0 if weight > 0 else 0.0], dtype=torch.float64, device=self.root_device
        )
        if distributed:
            dist.all_reduce(total)
        total_weight, n_clients = float(total[0]), int(total[1])
        if total_weight <= 0:
            rank_zero_info("fedavg: no valid client state in this round; the global state is unchanged.")
            averaged_state = {k: v.clone() for k, v in global_state.items()}
        else:
            averaged: StateDict = {}
            for key in sorted(contribution):
                value = contribution[key]
                if not value.is_floating_point():
                    averaged[key] = value.clone()
                    continue
                acc = value.to(device=self.root_device, dtype=torch.float64) * weight
                if distributed:
                    dist.all_reduce(acc)
                averaged[key] = (acc / total_weight).to(dtype=value.dtype, device=value.device)
            averaged_state = self.aggregator.finalize(global_state, averaged, n_clients)
        load_federated_state(module, averaged_state)
        self._round_start = get_federated_state(module)
        self.rounds_done += 1
        self._steps_in_round = 0
        if self.reset_optimizer_state:
            for opt in self.optimizers:
                opt.state.clear()


# Importing this module makes Trainer(strategy="fedavg" | "fedavg_spawn" | "fedavg_fork") resolvable.
FedAvgStrategy.register_strategies(StrategyRegistry)
