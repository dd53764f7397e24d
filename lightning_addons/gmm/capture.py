"""Run a module in eval mode with temporary forward hooks (pure torch): the one hook/eval/restore block that
the auditor's map capture and the pruning's APoZ measurement share.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).train()
    >>> seen = []
    >>> run_with_hooks(net, {"0": lambda m, i, o: seen.append(tuple(o.shape))}, [torch.zeros(4, 1, 5, 5)])
    >>> seen, net.training, len(net[0]._forward_hooks)
    ([(4, 2, 3, 3)], True, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def run_with_hooks(
    module: nn.Module,
    hooks: dict[str, Callable],
    batches: Iterable[torch.Tensor],
    device: torch.device | str | None = None,
) -> None:
    """Forward every batch through ``module`` in eval mode under ``torch.no_grad()`` with ``hooks``
    (``{submodule name: forward hook}``) registered only for this pass; the hooks are removed and every
    submodule's train/eval flag restored in ``finally``, whatever happens in between.

    Raises:
        ValueError: a hook names a submodule that ``module`` does not have.
    """
    modules = dict(module.named_modules())
    unknown = [n for n in hooks if n not in modules]
    if unknown:
        raise ValueError(f"no submodule named {unknown} in {type(module).__name__}.")
    modes = {m: m.training for m in module.modules()}
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    try:
        module.eval()
        with torch.no_grad():
            for xb in batches:
                module(xb.to(device) if device is not None else xb)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
