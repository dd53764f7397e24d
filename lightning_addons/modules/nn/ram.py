"""RAM: encoder layers whose attention can be replaced by an MLP, per axis (arXiv 2410.24023).

A transformer encoder layer mixes tokens along one axis (time steps, or nodes/variates) with
self-attention, then applies a position-wise feed-forward network (FFN); both with a skip connection
and LayerNorm. RAM ("Replace Attention with MLP") removes the whole attention branch (Q, K, V
projections, scores, score x V and the output projection):

* ``mixer="attention"``: the usual multi-head self-attention, by default through
  ``torch.nn.functional.scaled_dot_product_attention`` (memory-efficient kernels; query-chunked with
  recomputation where CPU training would materialise the scores) or, with ``attention_impl="explicit"``,
  explicit matmuls. :func:`~lightning_addons.modules.nn.count_flops` counts both at the same analytic value
  (it registers a formula for the CPU kernel that bare ``FlopCounterMode`` counts as 0).
* ``mixer="mlp"``: RAM proper: no token mixing along that axis; the residual path + LayerNorm remain.
* ``mixer="ffn"``: a fresh position-wise FFN takes the attention's place (the second ablation).

:func:`replace_attention_with_mlp` converts existing models in place: our layers,
``nn.TransformerEncoderLayer``, any ``nn.MultiheadAttention`` (including tsl's ``MultiHeadAttention``,
hence tsl's ``TransformerModel``).

Analytic forward FLOPs per token (FLOPs = 2 x multiply-accumulates), model width ``d``, ``L`` tokens
along the mixed axis: attention ``8 d^2 + 4 L d``, FFN ``4 d d_ff`` (see :func:`attention_flops_per_token`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_addons._validate import positive_int as _check_positive_int

MIXERS = ("attention", "mlp", "ffn")
AXES = ("time", "space")
AXIS_CHOICES = ("time", "space", "both")
REPLACE_MODES = ("mlp", "ffn")
ACTIVATIONS = ("relu", "gelu", "elu")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")


def _activation(name: str) -> nn.Module:
    _check_choice("activation", name, ACTIVATIONS)
    return {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}[name]()


def attention_flops_per_token(d_model: int, seq_len: int) -> int:
    """Analytic forward FLOPs of one self-attention block per token: ``8 d^2 + 4 L d``.

    ``8 d^2``: the Q, K, V and output projections (4 matmuls of ``d x d``, 2 FLOPs per MAC);
    ``4 L d``: the scores ``Q K^T`` and ``scores x V`` (``L d`` MACs each per token). Biases, softmax
    and scaling are not counted (as in :class:`~torch.utils.flop_counter.FlopCounterMode`).

    Examples:
        >>> attention_flops_per_token(8, 4)
        640
    """
    return 8 * d_model * d_model + 4 * seq_len * d_model


def ffn_flops_per_token(d_model: int, d_ff: int) -> int:
    """Analytic forward FLOPs of a two-layer FFN per token: ``4 d d_ff``.

    Examples:
        >>> ffn_flops_per_token(8, 16)
        512
    """
    return 4 * d_model * d_ff


def check_series_input(x: torch.Tensor, name: str = "x", steps: int | None = None) -> None:
    """Validate a ``[batch, steps, nodes, features]`` input.

    Raises:
        ValueError: wrong rank, wrong number of steps, or NaN/inf values (which must be masked and
            filled before the model, e.g. by :class:`~lightning_addons.datamodules.TimeSeriesDataModule`).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape [batch, steps, nodes, features], got {type(x)}."
        )
    if x.dim() != 4:
        raise ValueError(
            f"`{name}` must have 4 dimensions [batch, steps, nodes, features], got shape {tuple(x.shape)} "
            f"(rank {x.dim()}); add singleton axes, e.g. x[..., None] for one feature."
        )
    if steps is not None and x.shape[1] != steps:
        raise ValueError(f"`{name}` has {x.shape[1]} steps but the model was built for lookback {steps}.")
    if not torch.isfinite(x).all():
        raise ValueError(
            f"`{name}` contains NaN or inf values. Missing values must be masked and filled before the model "
            "(TimeSeriesDataModule does this and passes the mask to the Forecaster's metrics)."
        )


ATTENTION_IMPLS = ("sdpa", "explicit")
#: Score elements (per query chunk) above which the CPU math fallback (attention dropout in training) is
#: computed in query chunks with recomputation in the backward pass: 2^24 floats = 64 MiB.
SCORE_CHUNK_ELEMENTS = 1 << 24


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the second-to-last axis, memory-efficient by default.

    ``impl="sdpa"`` (default) computes the scores with
    :func:`torch.nn.functional.scaled_dot_product_attention`: fused flash/memory-efficient kernels on GPU,
    the tiled flash kernel on CPU (no ``[..., L, L]`` score tensor is kept). Where the kernel would
    materialise the scores anyway (CPU training with attention dropout falls back to the math kernel),
    queries are processed in chunks of at most ``chunk_size`` (default: chunks whose scores fit 64 MiB)
    and each chunk is recomputed in the backward pass (``torch.utils.checkpoint``, the dropout mask
    reproduced), so peak memory is one chunk of scores instead of all of them: 675-node spatial
    attention at batch 8 fits in well under 1 GB. ``impl="explicit"`` is the reference: plain matmuls
    and softmax. Both give the same outputs (within float rounding) and
    :func:`~lightning_addons.modules.nn.count_flops` counts both at the same analytic value: 4 projections
    (``8 d^2`` FLOPs per token), ``Q K^T`` and ``scores x V`` (``4 L d``).

    Input ``[..., L, d]`` -> output ``[..., L, d]``.

    Args:
        d_model: token width.
        n_heads: attention heads (must divide ``d_model``).
        dropout: dropout on the attention weights.
        causal: mask future tokens.
        impl: ``"sdpa"`` or ``"explicit"``.
        chunk_size: queries per chunk (``None``: automatic, chunking only when the scores would be
            materialised; an integer forces chunking).

    Raises:
        ValueError: non-positive sizes, ``d_model`` not divisible by ``n_heads``, unknown ``impl``.

    Examples:
        >>> attn = MultiHeadSelfAttention(16, n_heads=4)
        >>> attn(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
        >>> ref = MultiHeadSelfAttention(16, n_heads=4, impl="explicit")
        >>> _ = ref.load_state_dict(attn.state_dict())
        >>> x = torch.randn(2, 5, 16)
        >>> torch.allclose(attn(x), ref(x), atol=1e-6)
        True
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        dropout: float = 0.0,
        causal: bool = False,
        impl: Literal["sdpa", "explicit"] = "sdpa",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_positive_int("n_heads", n_heads)
        _check_choice("impl", impl, ATTENTION_IMPLS)
        if chunk_size is not None:
            _check_positive_int("chunk_size", chunk_size)
        if d_model % n_heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads}).")
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        self.impl, self.chunk_size = impl, chunk_size
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, length, d = x.shape
        h, dh = self.n_heads, d // self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, length, h, dh).transpose(1, 2)  # [B', h, L, dh]

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        mix = self._explicit if self.impl == "explicit" else self._sdpa
        out = mix(q, k, v).transpose(1, 2).reshape(*lead, length, d)
        return self.out_proj(out)

    def _causal_mask(self, start: int, stop: int, length: int, device) -> torch.Tensor:
        """``True`` where query ``start + i`` may attend key ``j`` (``j <= start + i``)."""
        rows = torch.arange(start, stop, device=device)[:, None]
        return torch.arange(length, device=device)[None, :] <= rows

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        length = q.shape[-2]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if self.causal:
            scores = scores.masked_fill(~self._causal_mask(0, length, length, q.device), float("-inf"))
        weights = self.dropout(scores.softmax(dim=-1))
        return torch.matmul(weights, v)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout.p if self.training else 0.0
        length = q.shape[-2]
        # The CPU flash kernel has no dropout: with p > 0 the math kernel builds [B', h, L, L] scores.
        materialises = p > 0 and not q.is_cuda
        chunk = self.chunk_size
        if chunk is None and materialises:
            chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, q.shape[0] * q.shape[1] * length))
        if chunk is None or chunk >= length:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        recompute = materialises and torch.is_grad_enabled()
        outs = []
        for start in range(0, length, chunk):
            stop = min(length, start + chunk)
            mask = self._causal_mask(start, stop, length, q.device) if self.causal else None
            qc = q[:, :, start:stop]
            if recompute:
                outs.append(
                    checkpoint(_sdpa_chunk, qc, k, v, mask, p, use_reentrant=False, preserve_rng_state=True)
                )
            else:
                outs.append(_sdpa_chunk(qc, k, v, mask, p))
        return torch.cat(outs, dim=2)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}, chunk_size={self.chunk_size}"


def _sdpa_chunk(q, k, v, mask, p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


class FeedForward(nn.Module):
    """Position-wise ``Linear(d, d_ff) -> activation -> dropout -> Linear(d_ff, d_out)``.

    Args:
        d_model: input width.
        d_ff: hidden width.
        dropout: dropout after the activation.
        activation: ``"relu"``, ``"gelu"`` or ``"elu"``.
        d_out: output width (default ``d_model``).

    Examples:
        >>> FeedForward(8, 16)(torch.zeros(3, 8)).shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        d_out: int | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_positive_int("d_ff", d_ff)
        self.net = nn.Sequential(
            nn.Linear(d_model, d_ff),
            _activation(activation),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_out or d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MixerEncoderLayer(nn.Module):
    """A post-norm transformer encoder layer whose token mixer is attention, nothing (RAM) or an FFN.

    Tokens are the second-to-last axis of the input ``[..., L, d]``; models transpose their
    ``[B, T, N, d]`` hidden state so that ``axis`` (``"time"`` or ``"space"``) is that axis. ``axis`` is
    a tag used by :func:`replace_attention_with_mlp` and reports.

    ``mixer="attention"``: ``x = LN1(x + Drop(Attn(x)))``; ``"mlp"``: ``x = LN1(x)`` (RAM: attention
    removed, skip + LayerNorm remain); ``"ffn"``: ``x = LN1(x + Drop(FFN'(x)))``. Then always
    ``x = LN2(x + Drop(FFN(x)))``.

    Args:
        d_model: token width.
        d_ff: FFN hidden width.
        n_heads: attention heads.
        mixer: ``"attention"``, ``"mlp"`` or ``"ffn"``.
        axis: ``"time"`` or ``"space"``.
        dropout: dropout probability.
        activation: FFN activation.
        causal: causal attention (time axis only).
        attention_impl: ``"sdpa"`` (memory-efficient, default) or ``"explicit"`` (reference matmuls);
            see :class:`MultiHeadSelfAttention`.
        chunk_size: queries per attention chunk (``None``: automatic).
        checkpoint_chunks: 0 (off) or ``k``: in training, split the independent token groups (all leading
            axes, e.g. ``B x T`` for spatial mixing) into ``k`` chunks, each recomputed in the backward pass
            (``torch.utils.checkpoint``): activation memory of one chunk instead of the whole layer, for
            about one extra forward pass. Outputs and gradients are unchanged.
        attention_dropout: dropout on the attention weights (``None``: ``dropout``). 0 keeps CPU training
            on the fused flash kernel (no score tensor at all); STAEformer's reference code uses none.

    Raises:
        ValueError: unknown mixer/axis/activation/attention_impl or bad sizes.

    Examples:
        >>> layer = MixerEncoderLayer(16, 32, n_heads=4, mixer="mlp")
        >>> layer(torch.zeros(2, 7, 16)).shape
        torch.Size([2, 7, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_heads: int = 4,
        mixer: Literal["attention", "mlp", "ffn"] = "attention",
        axis: Literal["time", "space"] = "time",
        dropout: float = 0.1,
        activation: Literal["relu", "gelu", "elu"] = "gelu",
        causal: bool = False,
        attention_impl: Literal["sdpa", "explicit"] = "sdpa",
        chunk_size: int | None = None,
        checkpoint_chunks: int = 0,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if attention_dropout is not None and not 0 <= attention_dropout < 1:
            raise ValueError(f"`attention_dropout` must be in [0, 1) or None, got {attention_dropout!r}.")
        if (
            isinstance(checkpoint_chunks, bool)
            or not isinstance(checkpoint_chunks, int)
            or checkpoint_chunks < 0
        ):
            raise ValueError(
                f"`checkpoint_chunks` must be a non-negative integer, got {checkpoint_chunks!r}."
            )
        self.checkpoint_chunks = checkpoint_chunks
        _check_choice("mixer", mixer, MIXERS)
        _check_choice("axis", axis, AXES)
        _check_choice("attention_impl", attention_impl, ATTENTION_IMPLS)
        if chunk_size is not None:
            _check_positive_int("chunk_size", chunk_size)
        _check_positive_int("d_model", d_model)
        _check_positive_int("d_ff", d_ff)
        _check_positive_int("n_heads", n_heads)
        if d_model % n_heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads}).")
        self.d_model, self.d_ff, self.n_heads = d_model, d_ff, n_heads
        self.axis, self.activation, self.causal, self.p = axis, activation, causal, dropout
        self.attention_impl, self.chunk_size = attention_impl, chunk_size
        self.attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.mixer = "attention"
        self.attn: nn.Module | None = self._attention()
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        if mixer != "attention":
            self.set_mixer(mixer)

    def _attention(self) -> MultiHeadSelfAttention:
        return MultiHeadSelfAttention(
            self.d_model,
            self.n_heads,
            self.attention_dropout,
            self.causal,
            self.attention_impl,
            self.chunk_size,
        )

    def set_mixer(self, mixer: Literal["attention", "mlp", "ffn"]) -> None:
        """Switch the token mixer in place (new mixers are freshly initialised; the FFN/norms are kept)."""
        _check_choice("mixer", mixer, MIXERS)
        if mixer == self.mixer:
            return
        if mixer == "attention":
            self.attn = self._attention()
        elif mixer == "ffn":
            self.attn = FeedForward(self.d_model, self.d_ff, self.p, self.activation)
        else:
            self.attn = None
        ref = next(self.norm1.parameters())
        if self.attn is not None:
            self.attn.to(device=ref.device, dtype=ref.dtype)
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.checkpoint_chunks
        if not (k and self.training and torch.is_grad_enabled()):
            return self._layer(x)
        flat = x.reshape(-1, *x.shape[-2:])
        parts = [
            checkpoint(self._layer, chunk, use_reentrant=False, preserve_rng_state=True)
            for chunk in flat.chunk(min(k, flat.shape[0]))
        ]
        return torch.cat(parts).reshape(x.shape)

    def _layer(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.dropout(self.attn(x))
        x = self.norm1(x)
        return self.norm2(x + self.dropout(self.ffn(x)))

    def extra_repr(self) -> str:
        return f"mixer={self.mixer!r}, axis={self.axis!r}"


def _axis_mixers(mixer: str, temporal_mixer: str | None, spatial_mixer: str | None) -> tuple[str, str]:
    _check_choice("mixer", mixer, MIXERS)
    t = mixer if temporal_mixer is None else temporal_mixer
    s = mixer if spatial_mixer is None else spatial_mixer
    _check_choice("temporal_mixer", t, MIXERS)
    _check_choice("spatial_mixer", s, MIXERS)
    return t, s


class STAEformer(nn.Module):
    """STAEformer-style spatio-temporal transformer (Liu et al., CIKM 2023) with a RAM switch per axis.

    Input ``x: [B, T, N, F]`` -> forecast ``[B, H, N, output_size]``. Embedding per (step, node): input
    projection, time-of-day and day-of-week embeddings (from ``u``), and a learned adaptive
    spatio-temporal embedding ``[T, N, adaptive_embedding_dim]``; then ``num_layers_t`` temporal layers
    (tokens = time steps), ``num_layers_s`` spatial layers (tokens = nodes), and a readout that mixes
    time: ``Linear(T * d -> H * output_size)`` per node. ``d`` is the sum of the embedding sizes.

    The forward signature is tsl's (``x, edge_index=None, edge_weight=None, u=None``), so the model plugs
    into ``tsl.engines.Predictor`` unchanged. By default the graph is not used (spatial mixing is learned
    by attention, as in STAEformer); ``graph_hops=K`` adds graph-propagated inputs.

    Args:
        num_nodes: N.
        input_size: F (input features).
        output_size: output features (default ``input_size``).
        window: lookback T.
        horizon: H.
        input_embedding_dim: width of the input projection.
        tod_embedding_dim: time-of-day embedding width (0: off). Needs ``u[..., 0]`` in ``[0, 1)``.
        dow_embedding_dim: day-of-week embedding width (0: off). Needs ``u[..., 1]`` in ``0..6``.
        steps_per_day: resolution of the time-of-day embedding.
        adaptive_embedding_dim: adaptive embedding width (0: off).
        d_ff: FFN width.
        n_heads: attention heads.
        num_layers_t: temporal layers.
        num_layers_s: spatial layers.
        dropout: dropout probability.
        mixer: default mixer for both axes (``"attention"``, ``"mlp"``, ``"ffn"``).
        temporal_mixer: overrides ``mixer`` on the time axis.
        spatial_mixer: overrides ``mixer`` on the space axis.
        graph_hops: 0 (STAEformer: the graph is not used) or K: the input embedding also sees
            ``A x, ..., A^K x`` (sum over in-neighbours, weighted by ``edge_weight``; needs ``edge_index``).
        readout_hidden: 0 (STAEformer's linear readout) or the hidden width of a 2-layer MLP readout
            (a non-linearity after time is mixed: with temporal RAM the readout is the only time mixer).
        attention_impl: ``"sdpa"`` (memory-efficient, default) or ``"explicit"`` (reference matmuls).
        spatial_chunk_size: nodes (queries) per spatial attention chunk; ``None``: automatic (chunks only
            where the attention kernel would hold all ``N x N`` scores).
        checkpoint_chunks: 0 (off) or ``k``: every layer's independent token groups are split into ``k``
            chunks recomputed in the backward pass (see :class:`MixerEncoderLayer`); with
            ``attention_impl="sdpa"`` this keeps a 675-node, batch-8 training step under 1 GB.
        attention_dropout: dropout on the attention weights (``None``: ``dropout``; the reference
            STAEformer code uses 0, which also keeps CPU training on the fused SDPA kernel).

    Raises:
        ValueError: bad sizes or mixers; at forward time, bad input shapes, NaNs, missing ``u``.

    Examples:
        >>> model = STAEformer(num_nodes=5, window=12, horizon=3, tod_embedding_dim=0, dow_embedding_dim=0,
        ...                    input_embedding_dim=8, adaptive_embedding_dim=8, d_ff=16, n_heads=2,
        ...                    num_layers_t=1, num_layers_s=1, spatial_mixer="mlp")
        >>> model(torch.zeros(2, 12, 5, 1)).shape
        torch.Size([2, 3, 5, 1])
    """

    def __init__(
        self,
        num_nodes: int,
        input_size: int = 1,
        output_size: int | None = None,
        window: int = 12,
        horizon: int = 12,
        input_embedding_dim: int = 24,
        tod_embedding_dim: int = 24,
        dow_embedding_dim: int = 24,
        steps_per_day: int = 288,
        adaptive_embedding_dim: int = 80,
        d_ff: int = 256,
        n_heads: int = 4,
        num_layers_t: int = 3,
        num_layers_s: int = 3,
        dropout: float = 0.1,
        mixer: Literal["attention", "mlp", "ffn"] = "attention",
        temporal_mixer: Literal["attention", "mlp", "ffn"] | None = None,
        spatial_mixer: Literal["attention", "mlp", "ffn"] | None = None,
        readout_hidden: int = 0,
        graph_hops: int = 0,
        attention_impl: Literal["sdpa", "explicit"] = "sdpa",
        spatial_chunk_size: int | None = None,
        checkpoint_chunks: int = 0,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        _check_choice("attention_impl", attention_impl, ATTENTION_IMPLS)
        if spatial_chunk_size is not None:
            _check_positive_int("spatial_chunk_size", spatial_chunk_size)
        for name, value in (
            ("num_nodes", num_nodes),
            ("input_size", input_size),
            ("window", window),
            ("horizon", horizon),
            ("input_embedding_dim", input_embedding_dim),
            ("steps_per_day", steps_per_day),
        ):
            _check_positive_int(name, value)
        for name, value in (
            ("tod_embedding_dim", tod_embedding_dim),
            ("dow_embedding_dim", dow_embedding_dim),
            ("adaptive_embedding_dim", adaptive_embedding_dim),
            ("num_layers_t", num_layers_t),
            ("num_layers_s", num_layers_s),
            ("readout_hidden", readout_hidden),
            ("graph_hops", graph_hops),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        t_mix, s_mix = _axis_mixers(mixer, temporal_mixer, spatial_mixer)
        output_size = input_size if output_size is None else output_size
        _check_positive_int("output_size", output_size)
        self.num_nodes, self.window, self.horizon, self.output_size = num_nodes, window, horizon, output_size
        self.steps_per_day = steps_per_day
        self.d_model = d = (
            input_embedding_dim + tod_embedding_dim + dow_embedding_dim + adaptive_embedding_dim
        )
        self.graph_hops = graph_hops
        self.input_proj = nn.Linear(input_size * (graph_hops + 1), input_embedding_dim)
        self.tod_embedding = nn.Embedding(steps_per_day, tod_embedding_dim) if tod_embedding_dim else None
        self.dow_embedding = nn.Embedding(7, dow_embedding_dim) if dow_embedding_dim else None
        self.adaptive_embedding = (
            nn.Parameter(torch.empty(window, num_nodes, adaptive_embedding_dim))
            if adaptive_embedding_dim
            else None
        )
        if self.adaptive_embedding is not None:
            nn.init.xavier_uniform_(self.adaptive_embedding)
        self.temporal_layers = nn.ModuleList(
            MixerEncoderLayer(
                d,
                d_ff,
                n_heads,
                t_mix,
                "time",
                dropout,
                attention_impl=attention_impl,
                checkpoint_chunks=checkpoint_chunks,
                attention_dropout=attention_dropout,
            )
            for _ in range(num_layers_t)
        )
        self.spatial_layers = nn.ModuleList(
            MixerEncoderLayer(
                d,
                d_ff,
                n_heads,
                s_mix,
                "space",
                dropout,
                attention_impl=attention_impl,
                chunk_size=spatial_chunk_size,
                checkpoint_chunks=checkpoint_chunks,
                attention_dropout=attention_dropout,
            )
            for _ in range(num_layers_s)
        )
        if readout_hidden:
            self.output_proj = nn.Sequential(
                nn.Linear(window * d, readout_hidden),
                nn.GELU(),
                nn.Linear(readout_hidden, horizon * output_size),
            )
        else:
            self.output_proj = nn.Linear(window * d, horizon * output_size)

    def forward(self, x, edge_index=None, edge_weight=None, u=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        b, t, n, _ = x.shape
        if n != self.num_nodes:
            raise ValueError(f"`x` has {n} nodes but the model was built with num_nodes={self.num_nodes}.")
        if self.graph_hops:
            if edge_index is None:
                raise ValueError(
                    "STAEformer(graph_hops > 0) needs `edge_index` [2, E] (tsl passes the dataset's graph)."
                )
            hops = [x]
            for _ in range(self.graph_hops):
                hops.append(_propagate(hops[-1], edge_index, edge_weight))
            x = torch.cat(hops, dim=-1)
        feats = [self.input_proj(x)]
        if self.tod_embedding is not None or self.dow_embedding is not None:
            if u is None:
                raise ValueError(
                    "STAEformer with tod/dow embeddings needs `u` [B, T, (N,) 2] = (time-of-day in [0, 1), "
                    "day-of-week 0..6); pass u or set tod_embedding_dim=0 and dow_embedding_dim=0."
                )
            if u.dim() == 3:
                u = u[:, :, None, :]
            u = u.expand(b, t, n, u.shape[-1])
            if self.tod_embedding is not None:
                tod = (u[..., 0] * self.steps_per_day).long().clamp(0, self.steps_per_day - 1)
                feats.append(self.tod_embedding(tod))
            if self.dow_embedding is not None:
                if u.shape[-1] < 2:
                    raise ValueError(
                        f"`u` needs 2 channels (tod, dow) for dow_embedding_dim > 0, got {u.shape[-1]}."
                    )
                feats.append(self.dow_embedding(u[..., 1].long().clamp(0, 6)))
        if self.adaptive_embedding is not None:
            feats.append(self.adaptive_embedding.expand(b, t, n, -1))
        h = torch.cat(feats, dim=-1)  # [B, T, N, d]
        h = h.transpose(1, 2)  # [B, N, T, d]: tokens = time steps
        for layer in self.temporal_layers:
            h = layer(h)
        h = h.transpose(1, 2)  # [B, T, N, d]: tokens = nodes
        for layer in self.spatial_layers:
            h = layer(h)
        out = self.output_proj(h.transpose(1, 2).reshape(b, n, t * self.d_model))  # [B, N, H*F]
        return out.reshape(b, n, self.horizon, self.output_size).transpose(1, 2)


def _propagate(x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None) -> torch.Tensor:
    """``A x`` over the node axis of ``x [B, T, N, F]``: sum of source values into targets (tsl convention)."""
    edge_index = torch.as_tensor(edge_index, device=x.device)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"`edge_index` must have shape [2, E], got {tuple(edge_index.shape)}.")
    src, dst = edge_index[0], edge_index[1]
    msg = x.index_select(2, src)
    if edge_weight is not None:
        msg = msg * edge_weight.to(x)[None, None, :, None]
    return torch.zeros_like(x).index_add_(2, dst, msg)


class _RevIN(nn.Module):
    """Per-series instance normalisation over the lookback (non-affine), as in iTransformer/PatchTST."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).detach()
        return (x - mean) / std, mean, std


class ITransformer(nn.Module):
    """iTransformer-style long-term forecaster (Liu et al., ICLR 2024): each variate is a token.

    ``x: [B, T, N, F]``; the ``N * F`` series are embedded by ``Linear(T -> d)``, mixed across variates by
    ``num_layers`` encoder layers (attention axis ``"space"``: variates), and projected by
    ``Linear(d -> H)``. Instance normalisation over the lookback (``use_norm``) as in the reference code.

    Args:
        window: lookback T.
        horizon: H.
        d_model: token width.
        d_ff: FFN width.
        n_heads: attention heads.
        num_layers: encoder layers.
        dropout: dropout probability.
        mixer: ``"attention"``, ``"mlp"`` (RAM) or ``"ffn"``.
        use_norm: instance normalisation over the lookback.
        activation: FFN activation.
        attention_impl: ``"sdpa"`` (memory-efficient, default) or ``"explicit"`` (reference matmuls).

    Raises:
        ValueError: bad sizes or mixer; at forward time, bad input shapes or NaNs.

    Examples:
        >>> model = ITransformer(window=24, horizon=6, d_model=16, d_ff=16, n_heads=2, num_layers=1)
        >>> model(torch.zeros(2, 24, 7, 1)).shape
        torch.Size([2, 6, 7, 1])
    """

    def __init__(
        self,
        window: int = 96,
        horizon: int = 96,
        d_model: int = 128,
        d_ff: int = 128,
        n_heads: int = 8,
        num_layers: int = 2,
        dropout: float = 0.1,
        mixer: Literal["attention", "mlp", "ffn"] = "attention",
        use_norm: bool = True,
        activation: Literal["relu", "gelu", "elu"] = "gelu",
        attention_impl: Literal["sdpa", "explicit"] = "sdpa",
    ) -> None:
        super().__init__()
        _check_positive_int("window", window)
        _check_positive_int("horizon", horizon)
        _check_positive_int("num_layers", num_layers)
        _check_choice("mixer", mixer, MIXERS)
        self.window, self.horizon, self.use_norm = window, horizon, use_norm
        self.revin = _RevIN()
        self.embed = nn.Linear(window, d_model)
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            MixerEncoderLayer(
                d_model, d_ff, n_heads, mixer, "space", dropout, activation, attention_impl=attention_impl
            )
            for _ in range(num_layers)
        )
        self.projector = nn.Linear(d_model, horizon)

    def forward(self, x, edge_index=None, edge_weight=None, u=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        b, t, n, f = x.shape
        x = x.reshape(b, t, n * f)
        if self.use_norm:
            x, mean, std = self.revin(x)
        h = self.embed_dropout(self.embed(x.transpose(1, 2)))  # [B, V, d]: tokens = variates
        for layer in self.layers:
            h = layer(h)
        y = self.projector(h).transpose(1, 2)  # [B, H, V]
        if self.use_norm:
            y = y * std + mean
        return y.reshape(b, self.horizon, n, f)


class PatchTST(nn.Module):
    """PatchTST-style channel-independent forecaster (Nie et al., ICLR 2023): patches are tokens.

    Each of the ``N * F`` series is split into patches of ``patch_len`` with ``stride`` (the end padded by
    repeating the last value ``stride`` times), embedded by ``Linear(patch_len -> d)`` plus a learned
    position embedding, mixed along time by ``num_layers`` encoder layers (attention axis ``"time"``),
    flattened and projected to the horizon. Instance normalisation as in the reference code.

    Args:
        window: lookback T (>= ``patch_len``).
        horizon: H.
        patch_len: patch length.
        stride: patch stride.
        d_model: token width.
        d_ff: FFN width.
        n_heads: attention heads.
        num_layers: encoder layers.
        dropout: dropout probability.
        mixer: ``"attention"``, ``"mlp"`` (RAM) or ``"ffn"``.
        use_norm: instance normalisation.
        attention_impl: ``"sdpa"`` (memory-efficient, default) or ``"explicit"`` (reference matmuls).

    Raises:
        ValueError: lookback shorter than a patch, bad sizes or mixer; bad input at forward time.

    Examples:
        >>> model = PatchTST(window=32, horizon=8, patch_len=8, stride=8, d_model=16, d_ff=16, n_heads=2)
        >>> model(torch.zeros(2, 32, 3, 1)).shape
        torch.Size([2, 8, 3, 1])
    """

    def __init__(
        self,
        window: int = 96,
        horizon: int = 96,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 64,
        d_ff: int = 128,
        n_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.1,
        mixer: Literal["attention", "mlp", "ffn"] = "attention",
        use_norm: bool = True,
        attention_impl: Literal["sdpa", "explicit"] = "sdpa",
    ) -> None:
        super().__init__()
        for name, value in (
            ("window", window),
            ("horizon", horizon),
            ("patch_len", patch_len),
            ("stride", stride),
            ("num_layers", num_layers),
        ):
            _check_positive_int(name, value)
        if window < patch_len:
            raise ValueError(f"lookback `window` ({window}) is shorter than `patch_len` ({patch_len}).")
        _check_choice("mixer", mixer, MIXERS)
        self.window, self.horizon, self.patch_len, self.stride, self.use_norm = (
            window,
            horizon,
            patch_len,
            stride,
            use_norm,
        )
        self.num_patches = (window - patch_len) // stride + 2
        self.revin = _RevIN()
        self.embed = nn.Linear(patch_len, d_model)
        self.pos = nn.Parameter(torch.empty(self.num_patches, d_model).uniform_(-0.02, 0.02))
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            MixerEncoderLayer(d_model, d_ff, n_heads, mixer, "time", dropout, attention_impl=attention_impl)
            for _ in range(num_layers)
        )
        self.head = nn.Linear(self.num_patches * d_model, horizon)

    def forward(self, x, edge_index=None, edge_weight=None, u=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        b, t, n, f = x.shape
        x = x.reshape(b, t, n * f)
        if self.use_norm:
            x, mean, std = self.revin(x)
        s = x.transpose(1, 2)  # [B, V, T]
        s = torch.cat([s, s[..., -1:].expand(-1, -1, self.stride)], dim=-1)
        patches = s.unfold(-1, self.patch_len, self.stride)  # [B, V, P, patch_len]
        h = self.embed_dropout(self.embed(patches) + self.pos)
        for layer in self.layers:
            h = layer(h)
        y = self.head(h.flatten(-2)).transpose(1, 2)  # [B, H, V]
        if self.use_norm:
            y = y * std + mean
        return y.reshape(b, self.horizon, n, f)


class LinearForecaster(nn.Module):
    """Baseline: one shared ``Linear(T -> H)`` per series (as DLinear/NLinear's linear layer).

    Args:
        window: lookback T.
        horizon: H.
        use_norm: subtract the last value first (NLinear).

    Examples:
        >>> LinearForecaster(8, 2)(torch.zeros(1, 8, 3, 1)).shape
        torch.Size([1, 2, 3, 1])
    """

    def __init__(self, window: int = 96, horizon: int = 96, use_norm: bool = True) -> None:
        super().__init__()
        _check_positive_int("window", window)
        _check_positive_int("horizon", horizon)
        self.window, self.horizon, self.use_norm = window, horizon, use_norm
        self.linear = nn.Linear(window, horizon)

    def forward(self, x, edge_index=None, edge_weight=None, u=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        b, t, n, f = x.shape
        s = x.reshape(b, t, n * f).transpose(1, 2)
        last = s[..., -1:] if self.use_norm else 0.0
        y = self.linear(s - last) + last
        return y.transpose(1, 2).reshape(b, self.horizon, n, f)


class SeasonalNaive(nn.Module):
    """Baseline: repeat the value one season ago (``y[t + h] = x[t + h - season]``); no parameters.

    A season longer than the lookback reads ``x_hist`` (``[B, >= season, N, F]``, the steps ending where
    ``x`` ends), which :class:`~lightning_addons.datamodules.TimeSeriesDataModule` provides with
    ``history >= season`` and :class:`~lightning_addons.modules.Forecaster` passes on; ``season=1`` is the
    last-value baseline.

    Args:
        window: lookback T.
        horizon: H.
        season: season length in steps (24 for hourly data with a daily cycle, 168 for a weekly one).

    Raises:
        ValueError: non-positive sizes; at forward time, a season longer than the lookback without an
            ``x_hist`` at least ``season`` steps long.

    Examples:
        >>> SeasonalNaive(4, 3, season=2)(torch.arange(4.).reshape(1, 4, 1, 1)).flatten().tolist()
        [2.0, 3.0, 2.0]
        >>> hist = torch.arange(10.).reshape(1, 10, 1, 1)  # lookback 4 = the last 4 of these
        >>> SeasonalNaive(4, 3, season=7)(hist[:, -4:], x_hist=hist).flatten().tolist()
        [3.0, 4.0, 5.0]
    """

    def __init__(self, window: int = 96, horizon: int = 96, season: int = 24) -> None:
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("season", season)):
            _check_positive_int(name, value)
        self.window, self.horizon, self.season = window, horizon, season

    def forward(self, x, edge_index=None, edge_weight=None, u=None, x_hist=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        source = x
        if self.season > self.window:
            if x_hist is None or x_hist.shape[1] < self.season:
                got = "none" if x_hist is None else f"{x_hist.shape[1]} steps"
                raise ValueError(
                    f"SeasonalNaive(season={self.season}) is longer than the lookback ({self.window}): it needs "
                    f"`x_hist` with at least {self.season} steps (got {got}); use "
                    f"TimeSeriesDataModule(history={self.season}) with the Forecaster."
                )
            check_series_input(x_hist, "x_hist")
            source = x_hist
        last = source[:, -self.season :]
        reps = -(-self.horizon // self.season)
        return last.repeat(1, reps, 1, 1)[:, : self.horizon]


# ----------------------------------------------------------------------------------------------
# In-place conversion of existing models
# ----------------------------------------------------------------------------------------------


class AttentionReplacement(nn.Module):
    """Drop-in for an ``nn.MultiheadAttention`` (or tsl's ``MultiHeadAttention``) returning ``(out, None)``.

    ``mode="mlp"``: ``out`` is zero (a broadcast view, no FLOPs), so a residual ``x + attn(x)`` becomes
    ``x``: RAM. ``mode="ffn"``: ``out = FFN(query)``, a fresh position-wise feed-forward.

    Args:
        in_dim: query width.
        out_dim: attention output width (``embed_dim``).
        mode: ``"mlp"`` or ``"ffn"``.
        d_ff: FFN width for ``mode="ffn"``.
        axis: the axis the replaced attention mixed (for reports).
        batch_first: kept for modules that read it.

    Examples:
        >>> rep = AttentionReplacement(8, 8, mode="mlp")
        >>> rep(torch.ones(3, 2, 8))[0].abs().sum().item()
        0.0
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        mode: Literal["mlp", "ffn"] = "mlp",
        d_ff: int | None = None,
        axis: str = "time",
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        _check_choice("mode", mode, REPLACE_MODES)
        self.in_dim, self.out_dim, self.mode, self.axis, self.batch_first = (
            in_dim,
            out_dim,
            mode,
            axis,
            batch_first,
        )
        self.embed_dim = out_dim
        self.ffn = FeedForward(in_dim, d_ff or out_dim, 0.0, "gelu", d_out=out_dim) if mode == "ffn" else None

    def forward(self, query: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        if self.ffn is not None:
            return self.ffn(query), None
        return query.new_zeros(()).expand(*query.shape[:-1], self.out_dim), None

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, axis={self.axis!r}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class TorchEncoderLayerRAM(nn.Module):
    """An ``nn.TransformerEncoderLayer`` with its self-attention removed (``"mlp"``) or swapped for an FFN.

    Keeps the original layer's FFN (``linear1``, ``linear2``), norms, dropouts, activation and
    ``norm_first``/``batch_first``; accepts the ``src_mask``/``src_key_padding_mask``/``is_causal``
    arguments ``nn.TransformerEncoder`` passes (and ignores them: there is no token mixing left).

    Args:
        layer: the layer to convert (its modules are reused, not copied).
        mode: ``"mlp"`` or ``"ffn"``.

    Examples:
        >>> base = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        >>> TorchEncoderLayerRAM(base)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, layer: nn.TransformerEncoderLayer, mode: Literal["mlp", "ffn"] = "mlp") -> None:
        super().__init__()
        _check_choice("mode", mode, REPLACE_MODES)
        self.mode = mode
        self.linear1, self.dropout, self.linear2 = layer.linear1, layer.dropout, layer.linear2
        self.norm1, self.norm2 = layer.norm1, layer.norm2
        self.dropout1, self.dropout2 = layer.dropout1, layer.dropout2
        self.norm_first = layer.norm_first
        self.batch_first = getattr(layer.self_attn, "batch_first", False)
        self.activation = layer.activation
        d, d_ff = layer.linear1.in_features, layer.linear1.out_features
        # nn.TransformerEncoder reads `layers[0].self_attn.batch_first`: keep the name, with no attention in it.
        self.self_attn = AttentionReplacement(
            d, d, mode, d_ff=d_ff, axis="time", batch_first=self.batch_first
        )
        self.self_attn.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn(x)[0]) if self.mode == "ffn" else 0.0

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self, src, src_mask=None, src_key_padding_mask=None, is_causal=False, **kwargs
    ) -> torch.Tensor:
        x = src
        if self.norm_first:
            if self.mode == "ffn":
                x = x + self._mix(self.norm1(x))
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._mix(x))
        return self.norm2(x + self._ff(x))


@dataclass
class ReplacementReport:
    """What :func:`replace_attention_with_mlp` changed.

    Attributes:
        replaced: ``(module name, original type, axis)`` per converted module.
        mode: ``"mlp"`` or ``"ffn"``.
        axis: the requested axis.
        params_before: parameter count before.
        params_after: parameter count after.
    """

    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    mode: str = "mlp"
    axis: str = "both"
    params_before: int = 0
    params_after: int = 0

    @property
    def params_removed(self) -> int:
        return self.params_before - self.params_after

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        lines = [
            f"replace_attention_with_mlp(axis={self.axis!r}, mode={self.mode!r}): {len(self.replaced)} module(s), "
            f"params {self.params_before:,} -> {self.params_after:,} ({-self.params_removed:+,})"
        ]
        lines += [f"  {name}: {kind} [{axis}]" for name, kind, axis in self.replaced]
        return "\n".join(lines)


def _mha_axis(module: nn.Module) -> str:
    # tsl's MultiHeadAttention stores its axis in the rearrange pattern ("b t n f -> n (b t) f" for nodes).
    pattern = getattr(module, "_in_pattern", "")
    if pattern.endswith("n (b t) f"):
        return "space"
    axis = getattr(module, "axis", "time")
    return "space" if axis in ("nodes", "space", 1) else "time"


def _found_axes(model: nn.Module) -> set[str]:
    axes: set[str] = set()
    for module in model.modules():
        if isinstance(module, MixerEncoderLayer) and module.mixer == "attention":
            axes.add(module.axis)
        elif isinstance(module, nn.TransformerEncoderLayer):
            axes.add("time")
        elif isinstance(module, nn.MultiheadAttention):
            axes.add(_mha_axis(module))
    return axes


def replace_attention_with_mlp(
    model: nn.Module,
    axis: Literal["time", "space", "both"] = "both",
    mode: Literal["mlp", "ffn"] = "mlp",
) -> ReplacementReport:
    """Remove the attention of ``model``'s encoder layers in place (RAM), on one axis or both.

    Converts, depth first: our :class:`MixerEncoderLayer` (``set_mixer``), ``nn.TransformerEncoderLayer``
    (replaced by :class:`TorchEncoderLayerRAM`, reusing its FFN and norms), and any other
    ``nn.MultiheadAttention`` including tsl's ``MultiHeadAttention`` (replaced by
    :class:`AttentionReplacement`, so tsl's ``TransformerLayer``/``TransformerModel`` keep working).
    Axis of a module: our layers' ``axis``; tsl attention with ``axis="nodes"`` is ``"space"``; plain
    torch attention, which mixes its sequence axis, is ``"time"``. Replaced parts are freshly initialised
    (``"ffn"``); fine-tune afterwards or train from scratch.

    Args:
        model: the model (modified in place).
        axis: ``"time"``, ``"space"`` or ``"both"``.
        mode: ``"mlp"`` (remove the attention branch) or ``"ffn"`` (a fresh FFN in its place).

    Returns:
        A :class:`ReplacementReport`.

    Raises:
        ValueError: unknown ``axis``/``mode``, or the model has no attention on the requested axis.

    Examples:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)
        >>> report = replace_attention_with_mlp(enc, axis="time")
        >>> len(report), any(isinstance(m, nn.MultiheadAttention) for m in enc.modules())
        (2, False)
    """
    _check_choice("axis", axis, AXIS_CHOICES)
    _check_choice("mode", mode, REPLACE_MODES)
    wanted = set(AXES) if axis == "both" else {axis}
    found = _found_axes(model)
    if not found & wanted:
        raise ValueError(
            f"axis={axis!r} is not present in the model: its attention mixes axes {sorted(found) or 'none'} "
            f"(allowed values: {list(AXIS_CHOICES)})."
        )
    report = ReplacementReport(mode=mode, axis=axis, params_before=sum(p.numel() for p in model.parameters()))

    def visit(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            name = f"{prefix}.{child_name}" if prefix else child_name
            if isinstance(child, MixerEncoderLayer):
                if child.mixer == "attention" and child.axis in wanted:
                    child.set_mixer(mode)
                    report.replaced.append((name, "MixerEncoderLayer", child.axis))
                continue
            if isinstance(child, nn.TransformerEncoderLayer):
                if "time" in wanted:
                    setattr(parent, child_name, TorchEncoderLayerRAM(child, mode))
                    report.replaced.append((name, type(child).__name__, "time"))
                continue
            if isinstance(child, nn.MultiheadAttention):
                ax = _mha_axis(child)
                if ax in wanted:
                    in_dim = getattr(child, "qdim", child.embed_dim)
                    rep = AttentionReplacement(
                        in_dim,
                        child.embed_dim,
                        mode,
                        axis=ax,
                        batch_first=getattr(child, "batch_first", False),
                    )
                    ref = child.out_proj.weight
                    setattr(parent, child_name, rep.to(device=ref.device, dtype=ref.dtype))
                    report.replaced.append((name, type(child).__name__, ax))
                continue
            visit(child, name)

    visit(model, "")
    _disable_torch_encoder_fast_path(model)
    report.params_after = sum(p.numel() for p in model.parameters())
    return report


def _disable_torch_encoder_fast_path(model: nn.Module) -> None:
    # nn.TransformerEncoder checks its first layer for the fused fast path; with converted layers the
    # check already fails (not a TransformerEncoderLayer), and nested tensors must stay off.
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder) and not isinstance(
            module.layers[0], nn.TransformerEncoderLayer
        ):
            module.enable_nested_tensor = False
            module.use_nested_tensor = False
