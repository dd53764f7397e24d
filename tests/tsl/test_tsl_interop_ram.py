"""tsl interop: our RAM model trains through tsl's Predictor on GPVAR near the optimal MAE; RAM on tsl models."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_scatter", reason="tsl extra not installed (pip install 'lightning-addons[tsl]')")
pytest.importorskip("tsl", reason="tsl extra not installed (pip install 'lightning-addons[tsl]')")

import pytorch_lightning as ptl  # noqa: E402  (tsl's engines are pytorch_lightning modules)

from lightning_addons.modules.nn import STAEformer, replace_attention_with_mlp  # noqa: E402
from lightning_addons.modules.tsl_interop import (  # noqa: E402
    gpvar_datamodule,
    optimal_test_mae,
    to_tsl_dataset,
    tsl_predictor,
)

WINDOW = 2  # the GPVAR filter's temporal order


def _trainer(epochs: int, **kw) -> ptl.Trainer:
    return ptl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kw,
    )


@pytest.fixture(scope="module")
def gpvar(seed_offset):
    return gpvar_datamodule(num_steps=3000, window=WINDOW, horizon=1, batch_size=64, seed=1234 + seed_offset)


@pytest.mark.stochastic
def test_temporal_ram_staeformer_through_tsl_predictor_reaches_near_optimal_mae(gpvar, seed_offset):
    dataset, dm = gpvar
    optimal = optimal_test_mae(dataset, dm)
    assert optimal == pytest.approx(dataset.mae_optimal_model, rel=0.05)
    ptl.seed_everything(seed_offset)
    model = STAEformer(
        num_nodes=dataset.n_nodes,
        window=WINDOW,
        horizon=1,
        input_embedding_dim=16,
        tod_embedding_dim=0,
        dow_embedding_dim=0,
        adaptive_embedding_dim=16,
        d_ff=64,
        n_heads=4,
        num_layers_t=1,
        num_layers_s=1,
        dropout=0.0,
        temporal_mixer="mlp",
        spatial_mixer="attention",
        readout_hidden=64,
        graph_hops=2,
    )
    assert all(layer.attn is None for layer in model.temporal_layers)
    predictor = tsl_predictor(model, loss="mae", lr=3e-3)
    trainer = _trainer(6)
    trainer.fit(predictor, datamodule=dm)
    mae = trainer.test(predictor, datamodule=dm, verbose=False)[0]["test_mae"]
    print(f"temporal-RAM STAEformer test MAE {mae:.4f}, optimal {optimal:.4f}, ratio {mae / optimal:.3f}")
    assert mae <= 1.25 * optimal


@pytest.mark.stochastic
@pytest.mark.parametrize("axis", ["time", "both"])
def test_replace_attention_in_tsl_transformer_model_trains_without_attention(gpvar, axis, seed_offset):
    from tsl.nn.models import TransformerModel

    _, dm = gpvar
    torch.manual_seed(seed_offset)
    model = TransformerModel(
        input_size=1, output_size=1, horizon=1, hidden_size=16, ff_size=32, n_heads=2, n_layers=2, axis="both"
    )
    report = replace_attention_with_mlp(model, axis=axis, mode="mlp")
    axes = sorted({a for _, _, a in report.replaced})
    assert axes == (["time"] if axis == "time" else ["space", "time"])
    attention_left = [n for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert (attention_left == []) == (axis == "both")
    if axis == "both":
        assert not any("in_proj" in n or "out_proj" in n for n, _ in model.named_parameters())
    predictor = tsl_predictor(model, loss="mae", lr=3e-3)
    before = _trainer(1).test(predictor, datamodule=dm, verbose=False)[0]["test_mae"]
    _trainer(1, limit_train_batches=20).fit(predictor, datamodule=dm)
    after = _trainer(1).test(predictor, datamodule=dm, verbose=False)[0]["test_mae"]
    assert after < 0.9 * before


def test_our_datamodule_as_tsl_dataset(shared_data):
    from lightning_addons.datamodules import ChickenpoxDataModule

    dm = ChickenpoxDataModule(path=str(shared_data / "chickenpox.json"), lookback=8, horizon=4)
    ds = to_tsl_dataset(dm)
    assert (ds.n_nodes, ds.window, ds.horizon) == (20, 8, 4)
    sample = ds[0]
    assert tuple(sample.input.x.shape) == (8, 20, 1) and tuple(sample.target.y.shape) == (4, 20, 1)
    assert sample.input.edge_index.shape[0] == 2


def test_tsl_helpers_bad_arguments(gpvar):
    from lightning_addons.modules.tsl_interop import fit_and_test

    _, dm = gpvar
    model = STAEformer(num_nodes=30, window=WINDOW, horizon=1, tod_embedding_dim=0, dow_embedding_dim=0)
    with pytest.raises(ValueError, match=r"`loss` must be one of \['mae', 'mse'\], got 'l2'"):
        tsl_predictor(model, loss="l2")
    with pytest.raises(ValueError, match="`epochs` must be a positive integer, got 0"):
        fit_and_test(tsl_predictor(model), dm, epochs=0)
    with pytest.raises(ValueError, match="`window` must be a positive integer, got 0"):
        gpvar_datamodule(window=0)
