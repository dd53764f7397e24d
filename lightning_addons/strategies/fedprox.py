"""FedProx (Li et al., 2020): the client-side proximal term ``mu/2 * ||w - w_global||^2`` as a callback."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

from lightning_addons.strategies.state import get_federated_state

log = logging.getLogger(__name__)


class FedProx(pl.Callback):
    """Adds the gradient of ``mu/2 * ||w - w_global||^2`` to every federated parameter after backward.

    ``w_global`` is the federated state when local training starts (each client ``Trainer.fit`` in
    :class:`~lightning_addons.federated.FederatedSimulation`), or the state at the start of the current
    round under the ``fedavg`` strategy. Adding ``mu * (w - w_global)`` to the gradient is exactly the
    gradient of the proximal term, so the logged loss stays the task loss.

    Args:
        mu: proximal strength (>= 0; 0 is plain FedAvg).

    Raises:
        ValueError: negative or non-finite ``mu``.

    Examples:
        >>> from lightning_addons.federated import FederatedSimulation
        >>> FedProx(mu=0.01).mu
        0.01
    """

    def __init__(self, mu: float = 0.01) -> None:
        if not isinstance(mu, (int, float)) or not (mu >= 0) or mu == float("inf"):
            raise ValueError(f"`mu` must be a finite number >= 0, got {mu!r}.")
        self.mu = float(mu)
        self._anchor: dict[str, torch.Tensor] = {}
        self._params: dict[str, torch.nn.Parameter] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = dict(pl_module.named_parameters())
        state = get_federated_state(pl_module)
        self._params = {k: params[k] for k in state if k in params and params[k].requires_grad}
        skipped = sorted(set(state) - set(self._params))
        if skipped:
            log.warning(
                "FedProx: federated tensors %s are not trainable parameters of the module; skipped.", skipped
            )
        self._anchor = {k: p.detach().clone() for k, p in self._params.items()}

    def _current_anchor(self, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
        # A federated strategy exposes the round's global state (FedAvgStrategy.round_start_state);
        # otherwise the anchor is the state at the start of fit (one-process simulation rounds).
        round_start = getattr(trainer.strategy, "round_start_state", None)
        if isinstance(round_start, dict):
            return round_start
        return self._anchor

    @torch.no_grad()
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mu == 0:
            return
        anchor = self._current_anchor(trainer)
        for key, p in self._params.items():
            if p.grad is None or key not in anchor:
                continue
            p.grad.add_(p.detach() - anchor[key].to(p.device, p.dtype), alpha=self.mu)
