"""RAM encoders on a CUDA device: FLOPs counted there equal the CPU count (CUDA attention kernels
included), and a Forecaster trains on the GPU (skipped without a GPU)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lightning_addons.datamodules import TimeSeriesDataModule
from lightning_addons.modules import Forecaster
from lightning_addons.modules.nn import ITransformer, MixerEncoderLayer, STAEformer, count_flops
from lightning_addons.modules.nn.ram import attention_flops_per_token, ffn_flops_per_token

pytestmark = pytest.mark.gpu


def _models():
    return {
        "mixer_attention": (
            MixerEncoderLayer(16, 32, n_heads=2, mixer="attention"),
            (torch.randn(3, 10, 16),),
            {},
        ),
        "itransformer": (
            ITransformer(window=24, horizon=6, d_model=16, d_ff=16, n_heads=2, num_layers=2),
            (torch.randn(2, 24, 5, 1),),
            {},
        ),
        "staeformer": (
            STAEformer(
                num_nodes=6, window=12, horizon=12, d_ff=32, n_heads=2, num_layers_t=1, num_layers_s=1
            ),
            (torch.randn(2, 12, 6, 1),),
            {"u": torch.rand(2, 12, 2)},
        ),
    }


@pytest.mark.parametrize("name", ["mixer_attention", "itransformer", "staeformer"])
def test_flops_counted_on_cuda_equal_the_cpu_count(name):
    model, args, kwargs = _models()[name]
    cpu = count_flops(model, *args, **kwargs).total
    gpu = count_flops(
        model.cuda(), *(a.cuda() for a in args), **{k: v.cuda() for k, v in kwargs.items()}
    ).total
    assert gpu == cpu > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fast_path", [False, True])
def test_torch_encoder_layer_flops_on_cuda_equal_analytic(dtype, fast_path):
    # CUDA runs SDPA as flash / memory-efficient / cuDNN kernels, and eval + no_grad as one fused kernel
    d, d_ff, L, batch = 16, 32, 10, 2
    layer = nn.TransformerEncoderLayer(d, 2, d_ff, batch_first=True, dropout=0.0).cuda().to(dtype)
    x = torch.randn(batch, L, d, device="cuda", dtype=dtype)
    expected = batch * L * (attention_flops_per_token(d, L) + ffn_flops_per_token(d, d_ff))
    if fast_path:
        layer.eval()
        with torch.no_grad():
            assert count_flops(layer, x).total == expected
    else:
        assert count_flops(layer, x).total == expected


def test_forecaster_trains_on_the_gpu():
    rng = np.random.default_rng(0)
    t = np.arange(600, dtype=np.float32)
    values = np.stack([np.sin(t / 8 + p) for p in range(4)], 1) + 0.05 * rng.normal(size=(600, 4)).astype(
        np.float32
    )
    dm = TimeSeriesDataModule(values, lookback=24, horizon=6, splits=[400, 100, 100], batch_size=32)
    torch.manual_seed(0)
    model = ITransformer(
        window=24, horizon=6, d_model=16, d_ff=16, n_heads=2, num_layers=1, mixer="mlp", dropout=0.0
    )
    module = Forecaster(model, loss="mse", lr=1e-2)
    devices = set()

    class _Where(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            devices.add(next(pl_module.parameters()).device.type)

    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_Where()],
    )
    trainer.fit(module, dm)
    assert devices == {"cuda"}  # (Lightning moves the module back to the CPU at teardown)
    res = trainer.test(module, datamodule=dm, verbose=False)[0]
    # scaled space: predicting the training mean scores about 1.0 on these sines
    assert np.isfinite(res["test_mse"]) and res["test_mse"] < 0.2
