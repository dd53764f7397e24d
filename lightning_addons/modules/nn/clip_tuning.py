"""Pure-torch parameter-efficient CLIP tuning blocks: CoOp prompt context (PromptFL) and FedCLIP's attention adapter.

* :class:`PromptLearner` -- CoOp's learnable context: the prompt of class ``c`` is
  ``[SOS] ctx_1 ... ctx_M <name of c><suffix> [EOS]`` in the text tower's token-embedding space, where the
  ``M`` context vectors are shared by every class and are the only trainable tensors (Zhou et al., "Learning
  to Prompt for Vision-Language Models", IJCV 2022). Federating ``ctx`` alone with FedAvg is PromptFL (Guo et
  al., "PromptFL: Let Federated Participants Cooperatively Learn Prompts Instead of Models", 2023).
* :func:`encode_prompt_embeddings` -- the frozen open_clip text tower run from token *embeddings* instead of
  token ids (what ``CLIP.encode_text`` does after its embedding lookup), so gradients reach ``ctx``.
* :class:`AttentionAdapter` -- FedCLIP's adapter on frozen image features (Lu et al., "FedCLIP: Fast
  Generalization and Personalization for CLIP in Federated Learning", 2023):
  ``f * softmax(W2 relu(BN(W1 f)))``, one attention weight per feature dimension; only the adapter trains and
  is averaged.

No Lightning import; open_clip is imported lazily only for its text pooling helper.

Examples:
    >>> import torch
    >>> adapter = AttentionAdapter(8)
    >>> f = torch.randn(4, 8)
    >>> tuple(adapter(f).shape), bool((adapter.eval()(f).sign() == f.sign()).all())  # a positive reweighting
    ((4, 8), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

#: Attributes of an open_clip text tower that :func:`encode_prompt_embeddings` runs.
TEXT_TOWER_ATTRS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")


def text_tower(clip: nn.Module) -> nn.Module:
    """The module holding the open_clip text tower of ``clip`` (``clip`` itself for ``open_clip.CLIP``,
    ``clip.text`` for ``CustomTextCLIP`` with a ``TextTransformer``).

    Raises:
        TypeError: the model's text tower is not an open_clip transformer tower (e.g. a Hugging Face text
            model, or a CoCa tower with a class embedding), which these blocks do not drive.
    """
    for tower in (clip, getattr(clip, "text", None)):
        if tower is not None and all(hasattr(tower, a) for a in TEXT_TOWER_ATTRS):
            if getattr(tower, "cls_emb", None) is not None:
                break
            return tower
    raise TypeError(
        f"Prompt learning needs an open_clip text transformer with {list(TEXT_TOWER_ATTRS)} and no class "
        f"embedding; {type(clip).__name__} has none (Hugging Face and CoCa text towers are not supported)."
    )


def encode_prompt_embeddings(clip: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Text features ``[N, D]`` (not normalised) of prompt token embeddings ``[N, L, W]`` through ``clip``'s text tower.

    ``tokens`` ``[N, L]`` are the token ids the embeddings stand for: the tower pools at their end-of-text
    position. With ``embeddings = token_embedding(tokens)`` this equals ``clip.encode_text(tokens)``.

    Raises:
        ValueError: embeddings not ``[N, L, W]`` matching the tower's context length and width, or tokens not
            ``[N, L]``.
    """
    from open_clip.transformer import text_global_pool

    tower = text_tower(clip)
    length, width = tower.positional_embedding.shape
    if embeddings.ndim != 3 or tuple(embeddings.shape[1:]) != (length, width):
        raise ValueError(
            f"`embeddings` must be [N, {length}, {width}] for this text tower, got {tuple(embeddings.shape)}."
        )
    if tuple(tokens.shape) != tuple(embeddings.shape[:2]):
        raise ValueError(
            f"`tokens` must be [N, L] = {tuple(embeddings.shape[:2])}, got {tuple(tokens.shape)}."
        )
    cast = tower.transformer.get_cast_dtype()
    x = embeddings.to(cast) + tower.positional_embedding.to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    eos = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
    x = text_global_pool(x, tokens, pool_type, eos_token_id=eos)
    projection = getattr(tower, "text_projection", None)
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return x


class PromptLearner(nn.Module):
    """CoOp's shared learnable context vectors and the frozen embeddings of the rest of every class prompt.

    Built from an open_clip model with :meth:`from_clip`. ``forward()`` returns the prompt embeddings
    ``[N, L, W]`` (``[SOS]``, the ``M`` context vectors, then the frozen class-name/suffix/EOS/padding
    embeddings); feed them with :attr:`tokens` to :func:`encode_prompt_embeddings`.

    Args:
        tokens: ``[N, L]`` token ids of the class prompts (context positions ``1..M`` hold placeholders).
        embeddings: ``[N, L, W]`` frozen token embeddings of ``tokens``.
        num_context: ``M``, the number of context vectors (positions ``1..M``).
        context: ``[M, W]`` initial context (default: ``N(0, init_std^2)`` as in CoOp).
        init_std: standard deviation of the random initialisation.
        generator: random generator of the initialisation.

    Raises:
        ValueError: shapes that do not agree, ``num_context`` not in ``[1, L - 2]``.

    Examples:
        >>> from lightning_addons.zoo import tiny_clip
        >>> clip, tokenizer = tiny_clip()
        >>> names = ["zero", "one"]
        >>> learner = PromptLearner.from_clip(clip, tokenizer, names, context_init='a photo of the number: "',
        ...                                   suffix='".')
        >>> learner.num_context, tuple(learner.context.shape)
        (7, (7, 64))
        >>> text = encode_prompt_embeddings(clip, learner(), learner.tokens)
        >>> ref = clip.encode_text(tokenizer([f'a photo of the number: "{n}".' for n in names]))
        >>> torch.allclose(text, ref, atol=1e-5)
        True
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        embeddings: torch.Tensor,
        num_context: int,
        context: torch.Tensor | None = None,
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if tokens.ndim != 2 or embeddings.ndim != 3 or tuple(embeddings.shape[:2]) != tuple(tokens.shape):
            raise ValueError(
                f"`tokens` [N, L] and `embeddings` [N, L, W] must agree, got {tuple(tokens.shape)} and "
                f"{tuple(embeddings.shape)}."
            )
        length, width = embeddings.shape[1], embeddings.shape[2]
        if not isinstance(num_context, int) or not 1 <= num_context <= length - 2:
            raise ValueError(f"`num_context` must be an integer in [1, {length - 2}], got {num_context!r}.")
        if context is None:
            context = torch.randn(num_context, width, generator=generator) * init_std
        if tuple(context.shape) != (num_context, width):
            raise ValueError(f"`context` must be [{num_context}, {width}], got {tuple(context.shape)}.")
        self.num_context = num_context
        self.context = nn.Parameter(context.detach().float().clone())
        self.register_buffer("tokens", tokens.detach().long().clone())
        self.register_buffer("token_prefix", embeddings[:, :1].detach().float().clone())
        self.register_buffer("token_suffix", embeddings[:, 1 + num_context :].detach().float().clone())

    @classmethod
    @torch.no_grad()
    def from_clip(
        cls,
        clip: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        class_names: Sequence[str],
        num_context: int = 4,
        context_init: str | None = None,
        suffix: str = ".",
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> PromptLearner:
        """Prompts ``f"{context} {name}{suffix}"`` for every class of ``class_names``.

        ``context_init`` (e.g. ``"a photo of a"``) initialises the context from those words' embeddings
        (then ``num_context`` is their token count); otherwise ``num_context`` random vectors are used.

        Raises:
            ValueError: empty ``context_init``, a prompt longer than the context length, or a tokenizer that
                splits ``context_init`` differently inside the prompt (the context positions would be wrong).
        """
        tower = text_tower(clip)
        if context_init is not None:
            if not isinstance(context_init, str) or not context_init.strip():
                raise ValueError(f"`context_init` must be a non-empty string or None, got {context_init!r}.")
            init_ids = tokenizer([context_init])[0]
            num_context = int((init_ids != 0).sum()) - 2  # without [SOS] and [EOS]
            prefix = context_init
        else:
            prefix = " ".join(["X"] * num_context)
        tokens = tokenizer([f"{prefix} {name}{suffix}" for name in class_names])
        # the tokenizer truncates silently (keeping an end-of-text token): count the class part on its own
        class_part = (tokenizer([f"{name}{suffix}" for name in class_names]) != 0).sum(1) - 2
        if int(class_part.max()) + num_context + 2 > tokens.shape[1]:
            raise ValueError(
                f"A prompt f'{prefix} {{name}}{suffix}' does not fit the text tower's context length "
                f"{tokens.shape[1]}: shorten the context or the class names."
            )
        context = None
        if context_init is not None:
            expected = init_ids[1 : 1 + num_context]
            if not bool((tokens[:, 1 : 1 + num_context] == expected).all()):
                raise ValueError(
                    f"The tokenizer splits `context_init`={context_init!r} differently inside the prompts; end it "
                    "at a word boundary."
                )
            context = tower.token_embedding(expected.unsqueeze(0))[0].float()
        device = tower.positional_embedding.device
        embeddings = tower.token_embedding(tokens.to(device)).float()
        return cls(tokens, embeddings, num_context, context=context, init_std=init_std, generator=generator)

    def forward(self) -> torch.Tensor:
        n = self.tokens.shape[0]
        ctx = self.context.unsqueeze(0).expand(n, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class AttentionAdapter(nn.Module):
    """FedCLIP's attention adapter: ``f * softmax(W2 relu(norm(W1 f)))`` over the feature dimensions.

    The attention is a positive weight per feature dimension summing to one; callers L2-normalise the
    result (the scale is irrelevant to cosine logits). FedCLIP uses batch normalisation; a training batch
    of a single sample (the last batch of a small client) is normalised with the running statistics.

    Args:
        dim: feature dimension ``D``.
        hidden: hidden width (default ``D``, as in FedCLIP).
        norm: ``"batch"`` (FedCLIP), ``"layer"`` or ``"none"``.

    Raises:
        ValueError: non-positive sizes or an unknown ``norm``.
    """

    def __init__(
        self, dim: int, hidden: int | None = None, norm: Literal["batch", "layer", "none"] = "batch"
    ) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        for name, v in (("dim", dim), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"`norm` must be one of ['batch', 'layer', 'none'], got {norm!r}.")
        self.dim, self.hidden, self.norm_kind = dim, hidden, norm
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[norm](hidden) if norm != "none" else None
        self.fc2 = nn.Linear(hidden, dim)

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        """The per-dimension attention ``[B, D]`` (rows sum to one)."""
        h = self.fc1(features)
        if isinstance(self.norm, nn.BatchNorm1d) and self.training and h.shape[0] == 1:
            n = self.norm
            h = nn.functional.batch_norm(
                h, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps
            )
        elif self.norm is not None:
            h = self.norm(h)
        return torch.softmax(self.fc2(torch.relu(h)), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"`features` must be [B, {self.dim}], got {tuple(features.shape)}.")
        return features * self.attention(features)
