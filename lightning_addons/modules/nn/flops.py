"""Measured forward FLOPs with :class:`torch.utils.flop_counter.FlopCounterMode` (pure torch).

``FlopCounterMode`` counts matmul-like ops (``mm``, ``bmm``, ``addmm``, convolutions, ...) as
2 x multiply-accumulates and ignores element-wise ops (softmax, norms, activations). Two traps it
does not warn about: CPU ``scaled_dot_product_attention`` and the fused ``nn.TransformerEncoderLayer``
fast path (eval + no_grad) are counted as 0. :func:`count_flops` therefore registers a formula for the
CPU attention kernel and runs under ``torch.enable_grad()`` (which disables the fused encoder fast
path), and reports totals and a per-module table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def cpu_attention_flop_formulas() -> dict:
    """Formulas for the CPU fused attention kernels that ``FlopCounterMode`` counts as 0 (torch <= 2.14).

    Pass as ``FlopCounterMode(custom_mapping=cpu_attention_flop_formulas())``; :func:`count_flops` does.
    """
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flop
    return mapping


@dataclass
class FlopsReport:
    """Forward FLOPs of one call.

    Attributes:
        total: FLOPs of the whole forward pass (the batch given).
        batch_size: samples in that batch.
        params: trainable + frozen parameter count.
        per_module: module name -> FLOPs (inclusive of children), as ``FlopCounterMode`` reports them.
    """

    total: int
    batch_size: int
    params: int
    per_module: dict[str, int] = field(default_factory=dict)

    @property
    def per_sample(self) -> float:
        return self.total / max(1, self.batch_size)

    @property
    def macs_per_sample(self) -> float:
        return self.per_sample / 2

    def reduction_vs(self, baseline: FlopsReport) -> float:
        """Percentage of the baseline's per-sample FLOPs removed (positive = fewer FLOPs)."""
        return 100.0 * (1.0 - self.per_sample / baseline.per_sample)

    def table(self, depth: int = 2, top: int = 30) -> str:
        """Per-module table (modules up to ``depth`` dots deep, largest first)."""
        rows = [(k, v) for k, v in self.per_module.items() if k and k.count(".") < depth and v > 0]
        rows.sort(key=lambda kv: -kv[1])
        width = max([len(k) for k, _ in rows[:top]] + [6])
        out = [f"{'module':<{width}}  {'FLOPs/sample':>14}  {'share':>6}"]
        for name, value in rows[:top]:
            out.append(
                f"{name:<{width}}  {value / self.batch_size:>14,.0f}  {100 * value / max(1, self.total):>5.1f}%"
            )
        out.append(f"{'total':<{width}}  {self.per_sample:>14,.0f}  100.0%")
        return "\n".join(out)


def count_flops(model: nn.Module, *args, batch_size: int | None = None, **kwargs) -> FlopsReport:
    """Count the forward FLOPs of ``model(*args, **kwargs)`` with ``FlopCounterMode``.

    Runs in eval mode (restoring the previous mode) without building a graph, but with grad mode on so
    that ``nn.TransformerEncoderLayer`` takes its math path (the fused fast path counts 0 FLOPs).

    Args:
        model: the model.
        *args: positional inputs.
        batch_size: samples in the inputs (default: first dimension of the first tensor argument).
        **kwargs: keyword inputs.

    Examples:
        >>> report = count_flops(nn.Linear(4, 3), torch.zeros(2, 4))
        >>> report.total, report.per_sample
        (48, 24.0)
    """
    if batch_size is None:
        first = next((a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None:
            raise ValueError("count_flops needs a tensor input or an explicit `batch_size`.")
        batch_size = int(first.shape[0])
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, depth=None, custom_mapping=cpu_attention_flop_formulas())
        with torch.enable_grad(), counter:
            out = model(*args, **kwargs)
        del out
    finally:
        model.train(was_training)
    per_module: dict[str, int] = {}
    for name, counts in counter.get_flop_counts().items():
        clean = name.split(".", 1)[1] if "." in name else ""  # "Global" and the root module -> ""
        per_module[clean] = int(sum(counts.values()))
    total = int(counter.get_total_flops())
    return FlopsReport(total, batch_size, sum(p.numel() for p in model.parameters()), per_module)
