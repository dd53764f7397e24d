"""The federated-state contract: which tensors of a module move between clients and server (pure torch).

A module takes part in federated training through two methods:

* ``federated_state_dict() -> dict[str, Tensor]``: exactly the tensors clients train and exchange
  (for the CacheCLIPAdapter: the cache keys, ``N*K*C`` floats);
* ``load_federated_state_dict(state)``: loads such a dict back.

Modules without them fall back to their trainable parameters (``requires_grad=True``), so any
LightningModule works; frozen parameters and buffers never move.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


def uses_federated_contract(module: nn.Module) -> bool:
    """Whether ``module`` implements ``federated_state_dict``/``load_federated_state_dict`` itself."""
    return callable(getattr(module, "federated_state_dict", None)) and callable(
        getattr(module, "load_federated_state_dict", None)
    )


def get_federated_state(module: nn.Module) -> StateDict:
    """A detached copy of the tensors ``module`` exchanges in federated training.

    Args:
        module: any ``nn.Module``; ``federated_state_dict()`` is used when it exists, otherwise every
            parameter with ``requires_grad=True``.

    Raises:
        ValueError: the module has nothing to federate (no trainable parameters) or its
            ``federated_state_dict()`` returned something that is not a dict of tensors.

    Examples:
        >>> net = nn.Linear(2, 1)
        >>> net.bias.requires_grad_(False)
        Parameter containing:
        tensor([...])
        >>> sorted(get_federated_state(net))
        ['weight']
    """
    if uses_federated_contract(module):
        state = module.federated_state_dict()
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(
                f"{type(module).__name__}.federated_state_dict() must return a dict of tensors, got "
                f"{type(state).__name__}."
            )
        out = {k: v.detach().clone() for k, v in state.items()}
    else:
        out = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}
    if not out:
        raise ValueError(
            f"{type(module).__name__} has no federated state: implement `federated_state_dict()` or leave at "
            "least one parameter with requires_grad=True."
        )
    return out


class IncompatibleState(ValueError):
    """A state that does not match the reference state; ``key`` and ``reason`` say where and why.

    ``reason`` is one of ``"keys"``, ``"type"``, ``"shape"``, ``"dtype"`` or ``"non_finite"``.
    """

    def __init__(self, message: str, key: str | None, reason: str) -> None:
        super().__init__(message)
        self.key, self.reason = key, reason


def check_compatible(
    reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], who: str = "state"
) -> None:
    """Raise :class:`IncompatibleState` unless ``state`` has the keys, shapes and dtypes of ``reference``, all finite.

    Dtypes must match exactly: a float16 or float64 tensor where the reference holds float32 is rejected,
    not cast (a cast would hide a client running another precision, or a 1e300 that overflows float32).

    Examples:
        >>> check_compatible({"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float64)}, who="update")
        Traceback (most recent call last):
        ...
        lightning_addons.strategies.state.IncompatibleState: update['w'] has dtype torch.float64, expected torch.float32.
    """
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing or extra:
        key = (missing or extra)[0]
        raise IncompatibleState(
            f"{who} has the wrong keys: missing {missing}, unexpected {extra}.", key, "keys"
        )
    for key, ref in reference.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise IncompatibleState(
                f"{who}[{key!r}] must be a tensor, got {type(value).__name__}.", key, "type"
            )
        if tuple(value.shape) != tuple(ref.shape):
            raise IncompatibleState(
                f"{who}[{key!r}] has shape {tuple(value.shape)}, expected {tuple(ref.shape)} (the global state's).",
                key,
                "shape",
            )
        if value.dtype != ref.dtype:
            raise IncompatibleState(
                f"{who}[{key!r}] has dtype {value.dtype}, expected {ref.dtype}.", key, "dtype"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise IncompatibleState(
                f"{who}[{key!r}] holds {bad} non-finite values (NaN or inf).", key, "non_finite"
            )


@torch.no_grad()
def load_federated_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``module`` in place (the inverse of :func:`get_federated_state`).

    Raises:
        ValueError: keys, shapes or dtypes differ from the module's federated state, or NaN/inf values.

    Examples:
        >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> load_federated_state(b, get_federated_state(a))
        >>> bool(torch.equal(a.weight, b.weight))
        True
    """
    reference = get_federated_state(module)
    check_compatible(reference, state, who="federated state")
    if uses_federated_contract(module):
        module.load_federated_state_dict({k: v.detach().clone() for k, v in state.items()})
        return
    params = dict(module.named_parameters())
    for key, value in state.items():
        params[key].copy_(value.to(device=params[key].device, dtype=params[key].dtype))


def state_nbytes(state: Mapping[str, torch.Tensor]) -> int:
    """Exact payload bytes of a state dict: ``sum(numel * element_size)`` (dtype-aware).

    Examples:
        >>> state_nbytes({"w": torch.zeros(3, dtype=torch.float16)})
        6
    """
    return int(sum(t.numel() * t.element_size() for t in state.values()))
