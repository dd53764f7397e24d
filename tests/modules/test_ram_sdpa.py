"""The memory-efficient (SDPA, query-chunked) attention path equals the explicit reference path."""

import pytest
import torch

from lightning_addons.modules.nn import (
    ITransformer,
    MultiHeadSelfAttention,
    PatchTST,
    STAEformer,
    count_flops,
)
from lightning_addons.modules.nn.ram import attention_flops_per_token


def _pair(d=16, heads=4, dropout=0.0, causal=False, chunk_size=None):
    torch.manual_seed(0)
    ref = MultiHeadSelfAttention(d, heads, dropout, causal, impl="explicit")
    fast = MultiHeadSelfAttention(d, heads, dropout, causal, impl="sdpa", chunk_size=chunk_size)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 3, 64])
def test_sdpa_attention_equals_explicit_outputs_and_gradients(causal, chunk_size):
    ref, fast = _pair(causal=causal, chunk_size=chunk_size)
    x = torch.randn(2, 3, 11, 16)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_r, out_f = ref(xr), fast(xf)
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=1e-5)
    (out_r * torch.arange(16.0)).sum().backward()
    (out_f * torch.arange(16.0)).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, atol=1e-5, rtol=1e-5)
    for (name, pr), pf in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_chunked_dropout_path_recomputes_the_same_mask_in_backward():
    # CPU training with attention dropout: query chunks under checkpoint must reproduce the dropout mask,
    # so gradients equal those of the same chunks computed without recomputation.
    _, fast = _pair(dropout=0.3, chunk_size=4)
    fast.train()
    x = torch.randn(2, 10, 16)
    grads = []
    for grad_mode_chunks in (True, False):
        xg = x.clone().requires_grad_()
        torch.manual_seed(5)
        if grad_mode_chunks:
            out = fast(xg)
        else:  # same chunks, no checkpoint: the reference for the recomputed backward
            q, k, v = (
                p(xg).reshape(2, 10, 4, 4).transpose(1, 2) for p in (fast.q_proj, fast.k_proj, fast.v_proj)
            )
            parts = [
                torch.nn.functional.scaled_dot_product_attention(q[:, :, s : s + 4], k, v, dropout_p=0.3)
                for s in range(0, 10, 4)
            ]
            out = fast.out_proj(torch.cat(parts, 2).transpose(1, 2).reshape(2, 10, 16))
        out.square().sum().backward()
        grads.append((out.detach(), xg.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def _staeformer(impl, chunk=None, n=9):
    torch.manual_seed(1)
    return STAEformer(
        num_nodes=n,
        window=6,
        horizon=2,
        input_embedding_dim=8,
        tod_embedding_dim=4,
        dow_embedding_dim=4,
        steps_per_day=24,
        adaptive_embedding_dim=8,
        d_ff=16,
        n_heads=4,
        num_layers_t=1,
        num_layers_s=1,
        attention_impl=impl,
        spatial_chunk_size=chunk,
    ).eval()


def test_staeformer_sdpa_and_node_chunked_paths_equal_explicit_and_count_the_same_flops():
    x = torch.randn(3, 6, 9, 1)
    u = torch.stack([torch.rand(3, 6), torch.randint(0, 7, (3, 6)).float()], -1)
    ref = _staeformer("explicit")
    ref_out = ref(x, u=u)
    ref_flops = count_flops(ref, x, u=u).total
    for chunk in (None, 2):
        fast = _staeformer("sdpa", chunk)
        fast.load_state_dict(ref.state_dict())
        torch.testing.assert_close(fast(x, u=u), ref_out, atol=1e-5, rtol=1e-5)
        assert count_flops(fast, x, u=u).total == ref_flops


def test_sdpa_flops_equal_the_analytic_attention_formula():
    d, length, batch = 16, 12, 3
    attn = MultiHeadSelfAttention(d, 4).eval()
    flops = count_flops(attn, torch.zeros(batch, length, d)).total
    assert flops == batch * length * attention_flops_per_token(d, length)


@pytest.mark.parametrize(
    "build",
    [
        lambda impl: ITransformer(window=16, horizon=4, d_model=16, d_ff=16, n_heads=2, attention_impl=impl),
        lambda impl: PatchTST(
            window=16, horizon=4, patch_len=4, stride=4, d_model=16, d_ff=16, attention_impl=impl
        ),
    ],
    ids=["itransformer", "patchtst"],
)
def test_ltsf_models_sdpa_equals_explicit(build):
    torch.manual_seed(0)
    ref = build("explicit").eval()
    fast = build("sdpa").eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 5, 1)
    torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)
    assert count_flops(fast, x).total == count_flops(ref, x).total


def test_unknown_attention_impl_and_bad_chunk_size_are_named():
    with pytest.raises(ValueError, match=r"`impl` must be one of \['sdpa', 'explicit'\], got 'flash'"):
        MultiHeadSelfAttention(8, 2, impl="flash")
    with pytest.raises(ValueError, match=r"`attention_impl` must be one of .* got 'fast'"):
        STAEformer(num_nodes=3, attention_impl="fast")
    with pytest.raises(ValueError, match=r"`spatial_chunk_size` must be a positive integer, got 0"):
        STAEformer(num_nodes=3, spatial_chunk_size=0)


def test_checkpointed_layer_chunks_give_the_same_outputs_and_gradients():
    x = torch.randn(2, 6, 9, 1)
    u = torch.stack([torch.rand(2, 6), torch.randint(0, 7, (2, 6)).float()], -1)
    torch.manual_seed(3)
    plain = STAEformer(
        num_nodes=9,
        window=6,
        horizon=2,
        input_embedding_dim=8,
        tod_embedding_dim=4,
        dow_embedding_dim=4,
        steps_per_day=24,
        adaptive_embedding_dim=8,
        d_ff=16,
        n_heads=4,
        num_layers_t=1,
        num_layers_s=1,
        dropout=0.0,
    ).train()
    chunked = STAEformer(
        num_nodes=9,
        window=6,
        horizon=2,
        input_embedding_dim=8,
        tod_embedding_dim=4,
        dow_embedding_dim=4,
        steps_per_day=24,
        adaptive_embedding_dim=8,
        d_ff=16,
        n_heads=4,
        num_layers_t=1,
        num_layers_s=1,
        dropout=0.0,
        checkpoint_chunks=4,
    ).train()
    chunked.load_state_dict(plain.state_dict())
    out_p, out_c = plain(x, u=u), chunked(x, u=u)
    torch.testing.assert_close(out_c, out_p, atol=1e-6, rtol=1e-6)
    out_p.square().sum().backward()
    out_c.square().sum().backward()
    for (name, pp), pc in zip(plain.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(pc.grad, pp.grad, atol=1e-5, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match=r"`checkpoint_chunks` must be a non-negative integer, got -1"):
        STAEformer(num_nodes=3, checkpoint_chunks=-1)


def test_attention_dropout_overrides_the_layer_dropout_on_the_weights_only():
    model = STAEformer(num_nodes=3, window=4, horizon=2, dropout=0.3, attention_dropout=0.0)
    attn = [m for m in model.modules() if isinstance(m, MultiHeadSelfAttention)]
    assert len(attn) == 6 and all(m.dropout.p == 0.0 for m in attn)
    assert all(layer.dropout.p == 0.3 for layer in model.temporal_layers)
    default = STAEformer(num_nodes=3, window=4, horizon=2, dropout=0.3)
    assert {m.dropout.p for m in default.modules() if isinstance(m, MultiHeadSelfAttention)} == {0.3}
    with pytest.raises(ValueError, match=r"`attention_dropout` must be in \[0, 1\) or None, got 1.5"):
        STAEformer(num_nodes=3, attention_dropout=1.5)
