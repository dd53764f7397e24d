"""Pure-torch maths of the Tip-Adapter cache model (no Lightning, no open_clip).

Given L2-normalised image features ``f`` ``[B, D]``, a text classifier ``W`` ``[N, D]`` (one normalised
row per class), cache keys ``[M, D]`` (``M = N * K`` normalised features of the cache images) and
one-hot cache values ``[M, N]``::

    logits = logit_scale * f @ W.T + alpha * exp(-beta * (1 - f @ keys.T)) @ values

Examples:
    >>> import torch
    >>> f = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    >>> W = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    >>> cache = CacheModel(keys=f[:3].clone(), labels=torch.tensor([0, 1, 2]), num_classes=3)
    >>> torch.equal(cache(f, W, logit_scale=10.0, alpha=0.0), 10.0 * f @ W.T)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

#: Built-in prompt template sets.
TEMPLATES: dict[str, list[str]] = {
    "simple": ["a photo of a {}."],
    # The 7-template ImageNet ensemble of CLIP's notebook, used by Tip-Adapter.
    "imagenet7": [
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ],
    # CLIP's MNIST template (the tiny world is pre-trained with it).
    "digits": ['a photo of the number: "{}".'],
}


@runtime_checkable
class EncoderClient(Protocol):
    """A datamodule that serves features from the adapter's CLIP encoder (the CacheCLIPAdapter contract).

    ``CacheCLIPAdapter.setup`` calls ``attach_encoder(encode_images, fingerprint, zero_shot=...)``;
    a new ``fingerprint`` must invalidate features computed with an older encoder. ``zero_shot`` (or None)
    predicts class scores from images, for generators that filter their samples with the CLIP judge.
    """

    def attach_encoder(
        self,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        fingerprint: str,
        zero_shot: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None: ...


@runtime_checkable
class CacheSetSource(Protocol):
    """A datamodule that provides the images the adapter builds its cache keys from."""

    def cache_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N*K, C, H, W], labels [N*K])``."""
        ...


def resolve_templates(templates: str | list[str]) -> list[str]:
    """A built-in template set's name, or a list of templates each holding one ``{}``.

    Raises:
        ValueError: unknown set name, empty list, or a template without exactly one ``{}``.
    """
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(
                f"`templates` must be one of the built-in sets {sorted(TEMPLATES)} or a list of templates "
                f"with one '{{}}' each, got {templates!r}."
            )
        return list(TEMPLATES[templates])
    templates = list(templates)
    if not templates:
        raise ValueError("`templates` must not be empty.")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ValueError(f"Every template must be a string with exactly one '{{}}', got {bad!r}.")
    return templates


def validate_class_names(class_names) -> list[str]:
    """Non-empty list of distinct, non-blank strings.

    Raises:
        ValueError: empty, blank or duplicate names (the duplicates are listed).
    """
    if isinstance(class_names, str) or class_names is None:
        raise ValueError(f"`class_names` must be a list of class names, got {class_names!r}.")
    names = list(class_names)
    if len(names) < 2:
        raise ValueError(f"`class_names` must hold at least 2 classes, got {names!r}.")
    blank = [n for n in names if not isinstance(n, str) or not n.strip()]
    if blank:
        raise ValueError(f"`class_names` must be non-empty strings, got {blank!r} in {names!r}.")
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise ValueError(f"`class_names` must be distinct; duplicated: {dupes}.")
    return names


def cache_affinity_logits(
    features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """``exp(-beta * (1 - f @ keys.T)) @ values``: the cache's class scores ``[B, N]``."""
    affinity = features @ keys.T
    return torch.exp(-beta * (1.0 - affinity)) @ values


def tip_adapter_logits(
    features: torch.Tensor,
    text_weights: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    logit_scale: float | torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """Zero-shot logits plus the alpha-weighted cache logits; with ``alpha == 0`` exactly zero-shot."""
    zero_shot = logit_scale * features @ text_weights.T
    if isinstance(alpha, (int, float)) and alpha == 0:
        return zero_shot
    return zero_shot + alpha * cache_affinity_logits(features, keys, values, beta)


@torch.no_grad()
def search_alpha_beta(
    zero_shot_logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    alpha_grid: list[float],
    beta_grid: list[float],
) -> dict[str, float]:
    """Grid search of the Tip-Adapter ``alpha`` x ``beta`` maximising accuracy of
    ``zero_shot_logits + alpha * cache_affinity_logits(features, keys, values, beta)`` on ``labels``.

    Ties keep the first grid point (smallest alpha index, then the first beta). Returns ``{"alpha", "beta",
    "val_acc", "val_acc_zero_shot"}``.

    Examples:
        >>> f = torch.eye(3)
        >>> out = search_alpha_beta(torch.zeros(3, 3), f, torch.arange(3), f, torch.eye(3), [0.0, 1.0], [1.0])
        >>> out["alpha"], out["val_acc"], round(out["val_acc_zero_shot"], 3)
        (1.0, 1.0, 0.333)
    """
    best = (-1.0, 0.0, 0.0)
    alphas = torch.tensor(alpha_grid, device=features.device)
    for beta in beta_grid:
        cache = cache_affinity_logits(features, keys, values, beta)
        logits = zero_shot_logits.unsqueeze(0) + alphas.view(-1, 1, 1) * cache.unsqueeze(0)  # [A, B, N]
        accs = (logits.argmax(-1) == labels.unsqueeze(0)).float().mean(1)
        i = int(accs.argmax())
        if float(accs[i]) > best[0]:
            best = (float(accs[i]), float(alpha_grid[i]), float(beta))
    return {
        "alpha": best[1],
        "beta": best[2],
        "val_acc": best[0],
        "val_acc_zero_shot": float((zero_shot_logits.argmax(-1) == labels).float().mean()),
    }


class CacheModel(nn.Module):
    """Cache keys (trainable or frozen parameter) and one-hot values (a buffer that never changes).

    Args:
        keys: ``[M, D]`` cache features (normalised by the caller, e.g. averaged augmented views).
        labels: ``[M]`` class of each key.
        num_classes: number of classes ``N``.
        train_keys: whether the keys receive gradients (Tip-Adapter-F).

    Raises:
        ValueError: keys not 2-D, labels of the wrong length or outside ``[0, num_classes)``.
    """

    def __init__(
        self, keys: torch.Tensor, labels: torch.Tensor, num_classes: int, train_keys: bool = True
    ) -> None:
        super().__init__()
        if keys.ndim != 2:
            raise ValueError(f"`keys` must be a 2-D tensor [M, D], got shape {tuple(keys.shape)}.")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (len(keys),):
            raise ValueError(
                f"`labels` must have shape ({len(keys)},) to match the keys, got {tuple(labels.shape)}."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"`labels` must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]."
            )
        self.num_classes = num_classes
        self.keys = nn.Parameter(keys.detach().clone().float(), requires_grad=train_keys)
        self.register_buffer("values", F.one_hot(labels, num_classes).float())
        self.register_buffer("labels", labels.clone())

    @property
    def feature_dim(self) -> int:
        return self.keys.shape[1]

    def forward(self, features, text_weights, logit_scale, alpha, beta=1.0) -> torch.Tensor:
        return tip_adapter_logits(features, text_weights, self.keys, self.values, logit_scale, alpha, beta)
