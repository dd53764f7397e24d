"""CommunicationMeter: exact bytes exchanged per client per round, and the ratio to full-model FedAvg."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lightning_addons.strategies.state import state_nbytes  # noqa: F401  (re-exported: the one definition)


class CommunicationMeter:
    """Counts the payload bytes sent down (server -> client) and up (client -> server).

    Bytes are ``numel * element_size`` of every tensor (dtype-aware: a float16 tensor counts 2 bytes
    per value): the raw tensor payload, without serialisation overhead. Flower's
    ``ArrayRecord.count_bytes()`` adds ``.npy`` headers and key names; the Flower adapter reports that
    figure separately.

    Args:
        full_model_bytes: bytes of the full model (what traditional FedAvg would send each way), for
            :meth:`ratio_to_full`. Use :meth:`from_module` to measure it from a module.

    Examples:
        >>> meter = CommunicationMeter(full_model_bytes=1000)
        >>> meter.record(0, client=1, down={"k": torch.zeros(10)}, up={"k": torch.zeros(10)})
        >>> meter.total_bytes, meter.bytes_per_client_round(), meter.ratio_to_full()
        (80, 80.0, 25.0)
    """

    def __init__(self, full_model_bytes: int | None = None) -> None:
        if full_model_bytes is not None and (not isinstance(full_model_bytes, int) or full_model_bytes <= 0):
            raise ValueError(
                f"`full_model_bytes` must be a positive integer or None, got {full_model_bytes!r}."
            )
        self.full_model_bytes = full_model_bytes
        self.records: list[dict[str, int]] = []

    @classmethod
    def from_module(cls, module: nn.Module) -> CommunicationMeter:
        """A meter whose reference is the module's full ``state_dict()`` (parameters and buffers)."""
        return cls(full_model_bytes=state_nbytes(module.state_dict()))

    def record(
        self,
        round: int,
        client: int,
        down: Mapping[str, torch.Tensor] | int,
        up: Mapping[str, torch.Tensor] | int = 0,
    ) -> None:
        """Record one client's traffic in a round (state dicts, or byte counts)."""
        d = down if isinstance(down, int) else state_nbytes(down)
        u = up if isinstance(up, int) else state_nbytes(up)
        self.records.append({"round": int(round), "client": int(client), "down": int(d), "up": int(u)})

    # ------------------------------------------------------------------ summaries
    @property
    def bytes_down(self) -> int:
        return sum(r["down"] for r in self.records)

    @property
    def bytes_up(self) -> int:
        return sum(r["up"] for r in self.records)

    @property
    def total_bytes(self) -> int:
        return self.bytes_down + self.bytes_up

    def per_round(self) -> dict[int, dict[str, int]]:
        """``{round: {"down", "up", "clients"}}``."""
        out: dict[int, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r["round"], {"down": 0, "up": 0, "clients": 0})
            row["down"] += r["down"]
            row["up"] += r["up"]
            row["clients"] += 1
        return out

    def cumulative(self) -> list[int]:
        """Total bytes after each recorded round, in round order."""
        total, out = 0, []
        for _, row in sorted(self.per_round().items()):
            total += row["down"] + row["up"]
            out.append(total)
        return out

    def bytes_per_client_round(self) -> float:
        """Mean bytes (down + up) per client per round."""
        return self.total_bytes / len(self.records) if self.records else 0.0

    def ratio_to_full(self) -> float:
        """How many times fewer bytes than sending the full model both ways to the same clients."""
        if self.full_model_bytes is None:
            raise ValueError("`full_model_bytes` is not set: build the meter with from_module() or pass it.")
        if not self.records or self.total_bytes == 0:
            return float("nan")
        return 2 * self.full_model_bytes * len(self.records) / self.total_bytes

    def summary(self) -> dict[str, float]:
        out = {
            "bytes_down": float(self.bytes_down),
            "bytes_up": float(self.bytes_up),
            "bytes_total": float(self.total_bytes),
            "bytes_per_client_round": self.bytes_per_client_round(),
        }
        if self.full_model_bytes is not None and self.records:
            out["full_model_bytes"] = float(self.full_model_bytes)
            out["ratio_to_full_model"] = self.ratio_to_full()
        return out

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"full_model_bytes": self.full_model_bytes, "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: Mapping) -> None:
        self.full_model_bytes = state.get("full_model_bytes", self.full_model_bytes)
        self.records = [dict(r) for r in state.get("records", [])]
