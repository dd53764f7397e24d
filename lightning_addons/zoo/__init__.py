"""The embedded "tiny world" of CacheFL: a tiny open_clip model and a small class-conditional diffusers UNet.

Pretrained CLIP and Stable Diffusion weights cannot be downloaded in tests or default demos, so the
project trains its own small models on the *public* 30% of scikit-learn's digits:

* :func:`tiny_clip` -- the ``tiny-digits-clip`` open_clip config (registered with
  ``open_clip.add_model_config``), pre-trained contrastively with class-name captions;
* :func:`tiny_unet` -- a class-conditional ``diffusers.UNet2DModel`` trained with DDPM, sampled with
  a hand-written DDIM loop (:func:`lightning_addons.zoo.tinyunet.sample_ddim`).

Weights resolve in this order: the files shipped in ``lightning_addons/zoo/weights/`` (produced by
``python -m lightning_addons.zoo.build``), then the cache (``lightning_addons.data.cache_dir("zoo")``),
else they are trained once (a few minutes on 2 CPU cores) and written to the cache. Every weight file
is checked against the sha256 recorded beside it (``SHA256SUMS``, written by the build) before it is
used: a corrupt or unrecorded file is an :class:`~lightning_addons.integrity.IntegrityError` naming it.

Examples:
    >>> from lightning_addons.zoo import tiny_clip, DIGIT_CLASS_NAMES
    >>> model, tokenizer = tiny_clip()
    >>> DIGIT_CLASS_NAMES[7], model.visual.image_size
    ('seven', (16, 16))
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lightning_addons.zoo.tinyclip import (
    DIGIT_CLASS_NAMES,
    PRETRAIN_TEMPLATES,
    TINY_CLIP_NAME,
    create_tiny_clip,
    register_tiny_clip,
)

WEIGHTS_DIR = Path(__file__).with_name("weights")
TINY_CLIP_FILE = "tiny_clip.pt"
TINY_UNET_FILE = "tiny_unet.pt"

_LOCK = threading.Lock()

__all__ = [
    "DIGIT_CLASS_NAMES",
    "PRETRAIN_TEMPLATES",
    "TINY_CLIP_NAME",
    "WEIGHTS_DIR",
    "register_tiny_clip",
    "tiny_clip",
    "tiny_clip_weights",
    "tiny_unet",
    "tiny_unet_weights",
]


def _resolve(filename: str, build) -> Path:
    """Shipped file, else cached file, else build it into the cache; verified against its recorded sha256."""
    from lightning_addons.data import cache_dir
    from lightning_addons.integrity import record_file_digest, verify_file_digest

    if os.environ.get("LIGHTNING_ADDONS_ZOO_IGNORE_SHIPPED") != "1":
        shipped = WEIGHTS_DIR / filename
        if shipped.is_file():
            verify_file_digest(
                shipped,
                remedy="Reinstall lightning-addons, or rebuild the weights with "
                "`python -m lightning_addons.zoo.build` (it records new digests).",
            )
            return shipped
    cached = cache_dir("zoo") / filename
    with _LOCK:
        if not cached.is_file():
            build(cached)
            record_file_digest(cached)
    verify_file_digest(cached, remedy=f"Delete {str(cached)!r}; it is rebuilt (and recorded) on next use.")
    return cached


def tiny_clip_weights() -> Path:
    """Path of the tiny CLIP weights (shipped, cached, or trained now and cached)."""

    def build(path: Path) -> None:
        from lightning_addons.zoo.tinyclip import pretrain_tiny_clip, save_tiny_clip

        model, init_emb, _ = pretrain_tiny_clip(verbose=False)
        save_tiny_clip(model, path, init_emb)

    return _resolve(TINY_CLIP_FILE, build)


def tiny_unet_weights() -> Path:
    """Path of the tiny UNet weights (shipped, cached, or trained now and cached)."""

    def build(path: Path) -> None:
        from lightning_addons.zoo.tinyunet import save_tiny_unet, train_tiny_unet

        model, _ = train_tiny_unet(verbose=False)
        save_tiny_unet(model, path)

    return _resolve(TINY_UNET_FILE, build)


def tiny_clip(pretrained: bool = True):
    """The tiny CLIP model (eval mode, float32) and its offline BPE tokenizer."""
    return create_tiny_clip(pretrained=pretrained)


def tiny_unet(pretrained: bool = True):
    """The class-conditional tiny UNet (eval mode) and its DDPM noise scheduler."""
    from lightning_addons.zoo.tinyunet import create_tiny_unet

    return create_tiny_unet(pretrained=pretrained)
