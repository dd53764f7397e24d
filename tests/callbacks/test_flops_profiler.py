"""FlopsProfiler: measured FLOPs equal the analytic count; reduction vs baseline; logged; state."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_addons.callbacks import FlopsProfiler
from lightning_addons.datamodules import TimeSeriesDataModule
from lightning_addons.modules import Forecaster
from lightning_addons.modules.nn import ITransformer, STAEformer
from lightning_addons.modules.nn.ram import attention_flops_per_token, ffn_flops_per_token

T, H, N, D, DFF = 12, 3, 5, 16, 24


def _staeformer(mixer: str) -> STAEformer:
    return STAEformer(
        num_nodes=N,
        window=T,
        horizon=H,
        input_embedding_dim=8,
        tod_embedding_dim=0,
        dow_embedding_dim=0,
        adaptive_embedding_dim=8,
        d_ff=DFF,
        n_heads=2,
        num_layers_t=1,
        num_layers_s=1,
        mixer=mixer,
    )


def _analytic_per_sample(mixer: str) -> int:
    """Hand count for one sample: input Linear(1->8) per (t, n), layers per token, readout per node."""
    tokens = T * N
    embed = tokens * 2 * 1 * 8
    ffn = ffn_flops_per_token(D, DFF)
    t_layer = tokens * (ffn + (attention_flops_per_token(D, T) if mixer == "attention" else 0))
    s_layer = tokens * (ffn + (attention_flops_per_token(D, N) if mixer == "attention" else 0))
    readout = N * 2 * (T * D) * H
    return embed + t_layer + s_layer + readout


def _dm():
    rng = np.random.default_rng(0)
    return TimeSeriesDataModule(
        rng.normal(size=(200, N)).astype(np.float32),
        lookback=T,
        horizon=H,
        splits=[150, 25, 25],
        batch_size=8,
    )


def test_profiler_flops_equal_analytic_count_and_reduction(tmp_path):
    profiler = FlopsProfiler(baseline=_staeformer("attention"), verbose=False)
    module = Forecaster(_staeformer("mlp"))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[profiler],
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=_dm())
    m = profiler.metrics
    assert m["flops_per_sample"] == _analytic_per_sample("mlp")
    assert m["baseline_flops_per_sample"] == _analytic_per_sample("attention")
    assert m["macs_per_sample"] == _analytic_per_sample("mlp") / 2
    expected = 100 * (1 - _analytic_per_sample("mlp") / _analytic_per_sample("attention"))
    assert m["flops_reduction_pct"] == pytest.approx(expected)
    assert m["params"] == sum(p.numel() for p in module.parameters())
    assert trainer.callback_metrics["flops_reduction_pct"].item() == pytest.approx(expected, rel=1e-5)
    assert "model.temporal_layers.0" in profiler.table and "model.spatial_layers.0" in profiler.table
    logged = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "flops_per_sample" in logged and "flops_reduction_pct" in logged
    state = profiler.state_dict()
    restored = FlopsProfiler()
    restored.load_state_dict(state)
    assert restored.metrics == m
    torch.save(state, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True) == state


def test_profiler_with_known_baseline_count_in_test_only_run():
    model = ITransformer(window=T, horizon=H, d_model=16, d_ff=16, n_heads=2, num_layers=1, mixer="mlp")
    profiler = FlopsProfiler(baseline_flops_per_sample=1e6, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[profiler],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(Forecaster(model), datamodule=_dm(), verbose=False)
    assert profiler.metrics["flops_reduction_pct"] == pytest.approx(
        100 * (1 - profiler.report.per_sample / 1e6)
    )


def test_profiler_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        FlopsProfiler(baseline=_staeformer("attention"), baseline_flops_per_sample=10.0)
    with pytest.raises(ValueError, match="`baseline_flops_per_sample` must be > 0, got -1"):
        FlopsProfiler(baseline_flops_per_sample=-1)
    with pytest.raises(ValueError, match="`depth` must be a positive integer, got 0"):
        FlopsProfiler(depth=0)
