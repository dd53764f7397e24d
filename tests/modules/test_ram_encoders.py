"""RAM encoders: counted FLOPs equal the analytic count, the acceptance reductions, conversion, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_addons.modules.nn import (
    ITransformer,
    LinearForecaster,
    MixerEncoderLayer,
    MultiHeadSelfAttention,
    PatchTST,
    SeasonalNaive,
    STAEformer,
    count_flops,
    replace_attention_with_mlp,
)
from lightning_addons.modules.nn.ram import attention_flops_per_token, ffn_flops_per_token

ATTENTION_TYPES = (nn.MultiheadAttention, MultiHeadSelfAttention)


def _no_attention_left(model: nn.Module) -> bool:
    return not any(isinstance(m, ATTENTION_TYPES) for m in model.modules()) and not any(
        k in name for name, _ in model.named_parameters() for k in ("in_proj", "q_proj", "k_proj", "v_proj")
    )


@pytest.mark.parametrize("d,L,heads", [(16, 10, 2), (32, 7, 4)])
def test_counted_attention_flops_equal_analytic(d, L, heads):
    batch = 3
    attn = MultiHeadSelfAttention(d, heads)
    report = count_flops(attn, torch.randn(batch, L, d))
    assert report.total == batch * L * attention_flops_per_token(d, L)


def test_counted_layer_flops_equal_analytic_for_every_mixer():
    d, d_ff, L, batch = 24, 40, 9, 2
    x = torch.randn(batch, L, d)
    expected = {
        "attention": attention_flops_per_token(d, L) + ffn_flops_per_token(d, d_ff),
        "mlp": ffn_flops_per_token(d, d_ff),
        "ffn": 2 * ffn_flops_per_token(d, d_ff),
    }
    for mixer, per_token in expected.items():
        layer = MixerEncoderLayer(d, d_ff, n_heads=4, mixer=mixer)
        assert count_flops(layer, x).total == batch * L * per_token, mixer


def test_torch_encoder_layer_counted_despite_cpu_sdpa_and_fast_path():
    # FlopCounterMode alone counts CPU SDPA as 0 and the eval+no_grad fast path as 0: count_flops must not.
    d, d_ff, L, batch = 16, 32, 10, 2
    layer = nn.TransformerEncoderLayer(d, 2, d_ff, batch_first=True, dropout=0.0).eval()
    x = torch.randn(batch, L, d)
    expected = batch * L * (attention_flops_per_token(d, L) + ffn_flops_per_token(d, d_ff))
    with torch.no_grad():
        assert count_flops(layer, x).total == expected


def test_staeformer_ram_both_axes_removes_at_least_58_percent_flops():
    kw = dict(num_nodes=207, window=12, horizon=12, d_ff=256, num_layers_t=3, num_layers_s=3)
    x, u = torch.randn(1, 12, 207, 1), torch.rand(1, 12, 2)
    full = STAEformer(**kw)
    assert full.d_model == 152
    base = count_flops(full, x, u=u)
    ram = count_flops(STAEformer(**kw, mixer="mlp"), x, u=u)
    # analytic: attention is 3 * (8d^2 + 4*12*d) + 3 * (8d^2 + 4*207*d) FLOPs per token
    d = 152
    att = 3 * (attention_flops_per_token(d, 12) + attention_flops_per_token(d, 207)) * 12 * 207
    assert base.total - ram.total == att
    assert ram.reduction_vs(base) >= 58.0
    assert ram.reduction_vs(base) == pytest.approx(61.67, abs=0.05)


def test_itransformer_ram_removes_at_least_42_233_percent_flops():
    x = torch.randn(1, 96, 7, 1)
    kw = dict(window=96, horizon=96, d_model=128, d_ff=128, num_layers=2)
    base, ram = count_flops(ITransformer(**kw), x), count_flops(ITransformer(**kw, mixer="mlp"), x)
    assert base.total - ram.total == 2 * 7 * attention_flops_per_token(128, 7)
    assert ram.reduction_vs(base) >= 42.233


@pytest.mark.parametrize(
    "model",
    [
        STAEformer(
            num_nodes=4,
            window=6,
            horizon=3,
            input_size=2,
            tod_embedding_dim=4,
            dow_embedding_dim=4,
            input_embedding_dim=8,
            adaptive_embedding_dim=0,
            d_ff=16,
            n_heads=2,
            num_layers_t=1,
            num_layers_s=1,
            steps_per_day=24,
        ),
        ITransformer(window=6, horizon=3, d_model=8, d_ff=8, n_heads=2, num_layers=1),
        PatchTST(window=6, horizon=3, patch_len=3, stride=2, d_model=8, d_ff=8, n_heads=2),
        LinearForecaster(6, 3),
        SeasonalNaive(6, 3, season=2),
    ],
    ids=lambda m: type(m).__name__,
)
def test_models_map_btnf_to_bhnf(model):
    x = torch.randn(2, 6, 4, 2)
    u = torch.stack([torch.rand(2, 6), torch.randint(0, 7, (2, 6)).float()], -1)
    assert model(x, None, None, u).shape == (2, 3, 4, 2)


def test_replace_on_our_model_per_axis_and_report():
    model = STAEformer(
        num_nodes=3,
        window=4,
        horizon=2,
        tod_embedding_dim=0,
        dow_embedding_dim=0,
        input_embedding_dim=8,
        adaptive_embedding_dim=8,
        d_ff=16,
        n_heads=2,
    )
    report = replace_attention_with_mlp(model, axis="space")
    assert [a for _, _, a in report.replaced] == ["space"] * 3
    assert all(layer.mixer == "attention" for layer in model.temporal_layers)
    assert all(layer.attn is None for layer in model.spatial_layers)
    assert report.params_removed == 3 * 4 * (16 * 16 + 16)
    with pytest.raises(ValueError, match=r"axis='space' is not present in the model.*\['time'\]"):
        replace_attention_with_mlp(model, axis="space")
    report = replace_attention_with_mlp(model, axis="time", mode="ffn")
    assert len(report) == 3 and all(layer.mixer == "ffn" for layer in model.temporal_layers)
    assert _no_attention_left(model)


def _train_steps(model, x, y, steps=30, lr=3e-3):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.stochastic
@pytest.mark.parametrize("mode", ["mlp", "ffn"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_replace_on_torch_transformer_encoder_trains_without_attention(mode, norm_first, seed_offset):
    torch.manual_seed(seed_offset)
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first),
        2,
        enable_nested_tensor=False,
    )
    model = nn.Sequential(enc, nn.Linear(16, 1))
    report = replace_attention_with_mlp(model, axis="time", mode=mode)
    assert len(report) == 2
    if mode == "mlp":
        assert report.params_removed == 2 * (4 * 16 * 16 + 4 * 16)  # in_proj + out_proj weights and biases
    assert _no_attention_left(model)
    x = torch.randn(64, 5, 16)
    y = x[..., :1].cumsum(1).detach()
    losses = _train_steps(model, x, y)
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():  # eval + no_grad used to take the fused fast path; must still run
        assert model(x).shape == (64, 5, 1)
    with pytest.raises(ValueError, match="not present in the model"):
        replace_attention_with_mlp(model, axis="time")


def test_replace_on_plain_multihead_attention_block():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x + self.mha(x, x, x, need_weights=False)[0])

    block = Block()
    x = torch.randn(2, 5, 8)
    expected = block.norm(x)
    replace_attention_with_mlp(block)
    torch.testing.assert_close(block(x), expected)
    assert _no_attention_left(block)


def test_bad_input_errors():
    model = ITransformer(window=8, horizon=2, d_model=8, d_ff=8, n_heads=2, num_layers=1)
    with pytest.raises(ValueError, match=r"4 dimensions \[batch, steps, nodes, features\].*rank 3"):
        model(torch.zeros(2, 8, 3))
    with pytest.raises(ValueError, match="has 6 steps but the model was built for lookback 8"):
        model(torch.zeros(2, 6, 3, 1))
    bad = torch.zeros(2, 8, 3, 1)
    bad[0, 1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN.*masked"):
        model(bad)
    with pytest.raises(ValueError, match=r"lookback `window` \(8\) is shorter than `patch_len` \(16\)"):
        PatchTST(window=8, horizon=2, patch_len=16)
    for cls in (ITransformer, PatchTST, LinearForecaster):
        with pytest.raises(ValueError, match="`horizon` must be a positive integer, got 0"):
            cls(window=32, horizon=0)
    with pytest.raises(ValueError, match="`horizon` must be a positive integer, got -1"):
        STAEformer(num_nodes=3, horizon=-1)
    with pytest.raises(ValueError, match=r"`mixer` must be one of \['attention', 'mlp', 'ffn'\], got 'conv'"):
        MixerEncoderLayer(8, 8, mixer="conv")
    with pytest.raises(ValueError, match=r"`axis` must be one of \['time', 'space', 'both'\], got 'nodes'"):
        replace_attention_with_mlp(model, axis="nodes")
    with pytest.raises(ValueError, match=r"axis='time' is not present in the model.*\['space'\]"):
        replace_attention_with_mlp(model, axis="time")
    with pytest.raises(ValueError, match=r"`mode` must be one of \['mlp', 'ffn'\], got 'zero'"):
        replace_attention_with_mlp(model, mode="zero")
    st = STAEformer(num_nodes=3, window=4, horizon=2)
    with pytest.raises(ValueError, match="needs `u`"):
        st(torch.zeros(1, 4, 3, 1))
    with pytest.raises(ValueError, match="3 nodes.*num_nodes=3|has 5 nodes"):
        st(torch.zeros(1, 4, 5, 1), u=torch.zeros(1, 4, 2))


def test_staeformer_graph_hops_sum_over_in_neighbours():
    from lightning_addons.modules.nn.ram import _propagate

    x = torch.arange(3.0).reshape(1, 1, 3, 1)  # node values 0, 1, 2
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 1]])  # 0->1, 1->2, 2->0, 2->1
    assert _propagate(x, edge_index, None).flatten().tolist() == [2.0, 2.0, 1.0]
    weighted = _propagate(x, edge_index, torch.tensor([1.0, 1.0, 1.0, 0.5]))
    assert weighted.flatten().tolist() == [2.0, 1.0, 1.0]
    model = STAEformer(
        num_nodes=3,
        window=4,
        horizon=2,
        tod_embedding_dim=0,
        dow_embedding_dim=0,
        input_embedding_dim=8,
        adaptive_embedding_dim=8,
        d_ff=16,
        n_heads=2,
        graph_hops=2,
        readout_hidden=8,
        temporal_mixer="mlp",
    )
    assert model(torch.randn(2, 4, 3, 1), edge_index).shape == (2, 2, 3, 1)
    with pytest.raises(ValueError, match=r"graph_hops > 0\) needs `edge_index`"):
        model(torch.randn(2, 4, 3, 1))
    with pytest.raises(ValueError, match=r"`edge_index` must have shape \[2, E\]"):
        model(torch.randn(2, 4, 3, 1), edge_index.T)
