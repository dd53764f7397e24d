"""FlopsProfiler: measured forward FLOPs/MACs per sample, parameters, and % reduction vs a baseline."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_addons.modules.nn.flops import FlopsReport, count_flops

_GRAPH_KEYS = ("edge_index", "edge_weight", "u")


def _model_inputs(module: nn.Module, batch) -> tuple[tuple, dict, int]:
    """``(args, kwargs, batch_size)`` to call ``module`` on ``batch`` (dict, tuple or tensor)."""
    if isinstance(batch, dict):
        x = batch["x"]
        extra = {k: batch[k] for k in _GRAPH_KEYS if k in batch}
    elif isinstance(batch, (list, tuple)):
        x, extra = batch[0], {}
    else:
        x, extra = batch, {}
    params = inspect.signature(module.forward).parameters
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in extra.items() if has_kwargs or k in params}
    return (x,), kwargs, int(x.shape[0])


class FlopsProfiler(pl.Callback):
    """Measure the model's forward FLOPs and MACs per sample once, log them, and compare with a baseline.

    At the start of fit/validate/test/predict (the first that runs), one batch of the datamodule's
    dataloader for that stage (or ``pl_module.example_input_array``) goes through
    :func:`~lightning_addons.modules.nn.count_flops` (``FlopCounterMode`` with a formula for the CPU
    attention kernel that it counts as 0, and without the fused encoder fast path). Logged to every
    logger and to ``trainer.callback_metrics``: ``flops_per_sample``, ``macs_per_sample``, ``params``,
    and with a baseline ``baseline_flops_per_sample`` and ``flops_reduction_pct`` (positive = fewer
    FLOPs). A per-module table is printed on rank 0 and kept in :attr:`table`.

    Args:
        baseline: a model to compare with (e.g. the attention version; in YAML a ``class_path``
            config), called on the same batch.
        baseline_flops_per_sample: or a known per-sample count (e.g. from an earlier run).
        depth: module depth of the table (3 shows ``model.layers.0`` inside a LightningModule).
        top: rows of the table.
        verbose: print the table.

    Raises:
        ValueError: both baselines given, non-positive ``baseline_flops_per_sample``/``depth``/``top``;
            no batch available to measure.

    Examples:
        >>> from lightning_addons.modules import Forecaster
        >>> from lightning_addons.modules.nn import LinearForecaster
        >>> cb = FlopsProfiler(verbose=False)
        >>> report = cb.measure(Forecaster(LinearForecaster(8, 2)), {"x": torch.zeros(4, 8, 3, 1)})
        >>> report.per_sample  # 3 series x Linear(8 -> 2): 3 * 2 * 8 * 2
        96.0
    """

    def __init__(
        self,
        baseline: nn.Module | None = None,
        baseline_flops_per_sample: float | None = None,
        depth: int = 3,
        top: int = 20,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if baseline is not None and baseline_flops_per_sample is not None:
            raise ValueError("Give `baseline` or `baseline_flops_per_sample`, not both.")
        if baseline_flops_per_sample is not None and not baseline_flops_per_sample > 0:
            raise ValueError(f"`baseline_flops_per_sample` must be > 0, got {baseline_flops_per_sample!r}.")
        for name, value in (("depth", depth), ("top", top)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.baseline = baseline
        self.baseline_flops_per_sample = baseline_flops_per_sample
        self.depth, self.top, self.verbose = depth, top, verbose
        self.report: FlopsReport | None = None
        self.baseline_report: FlopsReport | None = None
        self.metrics: dict[str, float] = {}
        self.table: str = ""

    # -- pure measurement ----------------------------------------------------------------------------
    def measure(self, pl_module: nn.Module, batch) -> FlopsReport:
        """Measure ``pl_module`` (and the baseline) on ``batch``; fills :attr:`metrics` and :attr:`table`."""
        args, kwargs, batch_size = _model_inputs(pl_module, batch)
        self.report = count_flops(pl_module, *args, batch_size=batch_size, **kwargs)
        metrics = {
            "flops_per_sample": float(self.report.per_sample),
            "macs_per_sample": float(self.report.macs_per_sample),
            "params": float(self.report.params),
        }
        base = self.baseline_flops_per_sample
        if self.baseline is not None:
            self.baseline.to(args[0].device)
            b_args, b_kwargs, _ = _model_inputs(self.baseline, batch)
            self.baseline_report = count_flops(self.baseline, *b_args, batch_size=batch_size, **b_kwargs)
            base = self.baseline_report.per_sample
            metrics["baseline_params"] = float(self.baseline_report.params)
        if base is not None:
            metrics["baseline_flops_per_sample"] = float(base)
            metrics["flops_reduction_pct"] = 100.0 * (1.0 - self.report.per_sample / base)
        self.metrics = metrics
        self.table = self.report.table(depth=self.depth, top=self.top)
        return self.report

    # -- Lightning hooks -----------------------------------------------------------------------------
    def _batch_for(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str):
        dm = trainer.datamodule
        loader_fn = {
            "fit": "train_dataloader",
            "validate": "val_dataloader",
            "test": "test_dataloader",
            "predict": "predict_dataloader",
        }[stage]
        if dm is not None and hasattr(dm, loader_fn):
            return next(iter(getattr(dm, loader_fn)()))
        if getattr(pl_module, "example_input_array", None) is not None:
            return pl_module.example_input_array
        raise ValueError(
            "FlopsProfiler needs a batch: use a datamodule with dataloaders or set `example_input_array` on the module."
        )

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.report is not None:
            return
        batch = move_data_to_device(self._batch_for(trainer, pl_module, stage), pl_module.device)
        self.measure(pl_module, batch)
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        for key, value in self.metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if self.verbose:
            summary = ", ".join(f"{k}={_fmt_count(v)}" for k, v in self.metrics.items())
            rank_zero_info(f"FlopsProfiler: {summary}\n{self.table}")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._run(trainer, pl_module, "fit")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, "validate")

    def on_test_start(self, trainer, pl_module) -> None:
        self._run(trainer, pl_module, "test")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._run(trainer, pl_module, "predict")

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, float]:
        return dict(self.metrics)

    def load_state_dict(self, state_dict: dict) -> None:
        self.metrics = {k: float(v) for k, v in state_dict.items()}


def _fmt_count(value: float) -> str:
    """Integers (FLOPs, MACs, parameter counts) print as integers with thousands separators; fractions
    (percentages) with two decimals."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"
