"""The CLIP backbone of :class:`~lightning_addons.modules.CacheCLIPAdapter`, without Lightning: reference
checks (no download), loading an open_clip model / a factory / the tiny-world model, and preprocessing.

Examples:
    >>> validate_clip_reference("pkg.module:factory", None)  # a factory reference is checked for shape only
    >>> validate_clip_reference("pkg.module", None)
    Traceback (most recent call last):
    ...
    ValueError: `clip_model`='pkg.module' is not an open_clip model name. ...
"""

from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path

import torch

from lightning_addons._imports import require

#: ``pretrained`` tag of the project's own tiny-world weights.
TINY_WORLD_TAG = "lightning-addons"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _is_factory_reference(name: str) -> bool:
    return ":" in name and not name.startswith(("local-dir:", "hf-hub:"))


def validate_clip_reference(clip_model: str, pretrained: str | None) -> None:
    """Check ``clip_model``/``pretrained`` without building the model (no download).

    Raises:
        ValueError: unknown open_clip model name (close matches listed), unknown pretrained tag,
            malformed factory reference.
        FileNotFoundError: a ``local-dir:`` folder or a checkpoint path that does not exist.
    """
    if not isinstance(clip_model, str) or not clip_model:
        raise ValueError(f"`clip_model` must be a non-empty string, got {clip_model!r}.")
    if _is_factory_reference(clip_model):
        module, _, func = clip_model.partition(":")
        if not module or not func:
            raise ValueError(
                f"`clip_model` factory reference must look like 'package.module:function', got {clip_model!r}."
            )
        return
    if clip_model.startswith("local-dir:"):
        folder = Path(clip_model[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"`clip_model`={clip_model!r}: folder {str(folder)!r} does not exist or holds no open_clip_config.json."
            )
        return
    if clip_model.startswith("hf-hub:"):
        return
    open_clip = require("open_clip", feature="CacheCLIPAdapter")
    from lightning_addons.zoo import register_tiny_clip

    register_tiny_clip()
    known = open_clip.list_models()
    cleaned = clip_model.replace("/", "-")
    if cleaned not in known:
        close = difflib.get_close_matches(cleaned, known, n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(
            f"`clip_model`={clip_model!r} is not an open_clip model name.{hint} Use a name from "
            f"open_clip.list_models(), 'local-dir:PATH', 'hf-hub:ORG/REPO' or a factory 'package.module:function'."
        )
    if pretrained is None:
        return
    if not isinstance(pretrained, str) or not pretrained:
        raise ValueError(
            f"`pretrained` must be None, an open_clip tag or a checkpoint path, got {pretrained!r}."
        )
    if cleaned == "tiny-digits-clip" and pretrained == TINY_WORLD_TAG:
        return
    tags = open_clip.list_pretrained_tags_by_model(cleaned)
    if pretrained in tags:
        return
    looks_like_path = os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)
    if looks_like_path:
        if not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"`pretrained` checkpoint path {pretrained!r} does not exist.")
        return
    allowed = tags + ([TINY_WORLD_TAG] if cleaned == "tiny-digits-clip" else [])
    raise ValueError(
        f"`pretrained`={pretrained!r} is neither a checkpoint file nor a tag of {cleaned!r}; known tags: {allowed}."
    )


def load_clip(clip_model: str, pretrained: str | None):
    """Build ``(model, tokenizer)`` for a validated reference (see :class:`CacheCLIPAdapter`)."""
    if _is_factory_reference(clip_model):
        module, _, func = clip_model.partition(":")
        out = getattr(importlib.import_module(module), func)()
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError(
                f"The factory {clip_model!r} must return (model, tokenizer), got {type(out).__name__}."
            )
        return out
    open_clip = require("open_clip", feature="CacheCLIPAdapter")
    cleaned = clip_model.replace("/", "-")
    if cleaned == "tiny-digits-clip":
        from lightning_addons.zoo.tinyclip import create_tiny_clip

        if pretrained == TINY_WORLD_TAG:
            return create_tiny_clip(pretrained=True)
        if pretrained is not None and _is_compact_tiny_file(pretrained):
            return create_tiny_clip(weights=pretrained)
    schema = clip_model.startswith(("local-dir:", "hf-hub:"))
    name = clip_model if schema else cleaned
    model = open_clip.create_model(name, pretrained=None if schema else pretrained)
    return model, open_clip.get_tokenizer(name)


def _is_compact_tiny_file(path: str) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not our format: let open_clip load it
        return False
    return isinstance(state, dict) and "token_embedding.rows" in state


def clip_preprocess(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images ``[B, 1|3, H, W]`` in [0, 1] -> the input of ``model`` (3 channels, its size, its normalisation).

    Raises:
        ValueError: images not ``[B, 1|3, H, W]``.
    """
    from lightning_addons.zoo.tinyclip import preprocess_tensor

    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Images must be [B, 1|3, H, W], got shape {tuple(images.shape)}.")
    return preprocess_tensor(images.float(), size, mean, std)
