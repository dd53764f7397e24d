"""The tiny open_clip model of the embedded world: config, contrastive pre-training on public digits, I/O.

The config ``tiny-digits-clip`` (``tiny-digits-clip.json`` next to this file: 64-d embeddings, a 2-layer
ViT on 16x16 images with 4x4 patches, a 2-layer text transformer, the bundled BPE tokenizer, which
works offline) is registered with :func:`open_clip.add_model_config`. :func:`pretrain_tiny_clip`
trains it contrastively on the public split of scikit-learn's digits with class-name captions
(``'a photo of the number: "seven".'`` and similar), so zero-shot classification works out of the box
and downstream (shifted) data leaves room for adaptation.

Weights are stored compactly: every tensor in float32 except the token embedding, of which only the
rows that training touched are kept (the other rows are zero when loaded; the tokenizer never emits
them for the digit captions). The file is a plain dict of tensors: ``torch.load(weights_only=True)``.

Examples:
    >>> from lightning_addons.zoo.tinyclip import create_tiny_clip
    >>> model, tokenizer = create_tiny_clip(pretrained=False)
    >>> tuple(model.encode_text(tokenizer(["a photo of the number: \\"one\\"."])).shape)
    (1, 64)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lightning_addons._imports import require
from lightning_addons.data import atomic_torch_save, digits_split_indices, load_digits_arrays

TINY_CLIP_NAME = "tiny-digits-clip"
CONFIG_PATH = Path(__file__).with_name(f"{TINY_CLIP_NAME}.json")

#: Names of the ten digit classes, as used in captions and by default downstream.
DIGIT_CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

#: Caption templates used in pre-training (the zero-shot "digits" template set is the first one).
PRETRAIN_TEMPLATES = [
    'a photo of the number: "{}".',
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}.",
]


def register_tiny_clip() -> str:
    """Register the tiny config with open_clip (idempotent); returns its model name."""
    open_clip = require("open_clip", feature="The tiny CLIP model")
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)
    return TINY_CLIP_NAME


def create_tiny_clip(pretrained: bool = True, weights: str | os.PathLike | None = None):
    """Build the tiny CLIP model (eval mode) and its tokenizer.

    Args:
        pretrained: load the project's pre-trained weights (shipped, cached or built, see
            :func:`lightning_addons.zoo.tiny_clip_weights`); ``False`` gives random initialisation.
        weights: an explicit weights file written by :func:`save_tiny_clip` (overrides ``pretrained``).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
    """
    open_clip = require("open_clip", feature="The tiny CLIP model")
    register_tiny_clip()
    import logging

    # open_clip warns through the root logger that no pretrained weights were loaded (ours load below):
    # drop that one record while the model is built; every other record and the logger's level are untouched.
    def not_the_random_init_warning(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            f"No pretrained weights loaded for model '{TINY_CLIP_NAME}'"
        )

    root = logging.getLogger()
    root.addFilter(not_the_random_init_warning)
    try:
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    finally:
        root.removeFilter(not_the_random_init_warning)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    if weights is not None or pretrained:
        if weights is None:
            from lightning_addons.zoo import tiny_clip_weights

            weights = tiny_clip_weights()
        load_tiny_clip_weights(model, weights)
    return model.eval(), tokenizer


def save_tiny_clip(
    model: torch.nn.Module, path: str | os.PathLike, init_token_embedding: torch.Tensor
) -> Path:
    """Write the compact weights file atomically (temp file + ``os.replace``)."""
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    emb = state.pop("token_embedding.weight")
    rows = torch.nonzero((emb != init_token_embedding).any(dim=1)).flatten()
    state["token_embedding.rows"] = rows
    state["token_embedding.values"] = emb[rows].clone()
    state["token_embedding.shape"] = torch.tensor(emb.shape)
    state["public_split_sha256"] = public_split_fingerprint()
    return atomic_torch_save(state, path)


def load_tiny_clip_weights(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a file written by :func:`save_tiny_clip` into ``model`` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Tiny CLIP weights file {str(path)!r} does not exist.")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    check_fingerprint(state, path)
    shape = tuple(int(s) for s in state.pop("token_embedding.shape"))
    emb = torch.zeros(shape)
    emb[state.pop("token_embedding.rows")] = state.pop("token_embedding.values")
    state["token_embedding.weight"] = emb
    model.load_state_dict(state, strict=True)
    return model


def digits_public_images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The public 30% of digits (no shift), intensities in [0, 1], ``[N, 1, 8, 8]`` and labels."""
    images, labels = load_digits_arrays()
    idx = torch.from_numpy(_public_indices(labels, seed))
    return torch.from_numpy(images)[idx].unsqueeze(1).contiguous(), torch.from_numpy(labels)[idx]


def _public_indices(labels, seed: int):
    # The public split of DigitsDataModule(public_fraction=0.3, seed=seed) (default val/test fractions).
    return digits_split_indices(labels, 0.15, 0.15, 0.3, seed)["public"]


def public_split_fingerprint(seed: int = 0) -> torch.Tensor:
    """SHA-256 (32 uint8) of the public split's source indices: the weights record what they were trained on,
    so a change of the split (which would leak pre-training images into the private test set) is detected."""
    import hashlib

    _, labels = load_digits_arrays()
    idx = torch.from_numpy(_public_indices(labels, seed)).to(torch.int64).sort().values.numpy().tobytes()
    return torch.tensor(list(hashlib.sha256(idx).digest()), dtype=torch.uint8)


def check_fingerprint(state: dict, path) -> None:
    """Raise if weights were trained on a different public split than the current one."""
    stored = state.pop("public_split_sha256", None)
    if stored is not None and not torch.equal(stored, public_split_fingerprint()):
        raise RuntimeError(
            f"The tiny-world weights {str(path)!r} were trained on a different public digits split than "
            "DigitsDataModule(public_fraction=0.3, seed=0) now produces: pre-training images would leak into the "
            "private test split. Rebuild them: python -m lightning_addons.zoo.build"
        )


def preprocess_tensor(x: torch.Tensor, image_size: int, mean, std) -> torch.Tensor:
    """Images ``[B, 1|3, H, W]`` in [0, 1] -> the CLIP input: 3 channels, resized, normalised."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def pretrain_tiny_clip(
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[torch.nn.Module, torch.Tensor, dict[str, float]]:
    """Contrastive pre-training of the tiny CLIP on the public digits with class-name captions.

    Each step pairs a batch of images with the captions of the ten classes (a random template per
    class per step) and minimises the symmetric CLIP loss, where an image's positives are its class
    caption and a caption's positives are all images of its class in the batch.

    Returns:
        The trained model, the initial token embedding (to store only the touched rows) and a summary.
    """
    open_clip = require("open_clip", feature="Pre-training the tiny CLIP model")
    register_tiny_clip()
    torch.manual_seed(seed)
    model, tokenizer = create_tiny_clip(pretrained=False)
    model.train()
    init_emb = model.token_embedding.weight.detach().clone()
    x, y = digits_public_images()
    cfg = model.visual.preprocess_cfg
    size = (
        model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    )
    n_cls = len(DIGIT_CLASS_NAMES)
    captions = torch.stack(
        [tokenizer([t.format(c) for c in DIGIT_CLASS_NAMES]) for t in PRETRAIN_TEMPLATES]
    )  # [T, n_cls, L]
    params_decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    params_other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": params_decay, "weight_decay": 0.05}, {"params": params_other, "weight_decay": 0.0}], lr=lr
    )
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            # light augmentation: random 1-pixel translations and small intensity jitter
            shift = torch.randint(-1, 2, (2,), generator=g)
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            xb = xb * (1 + 0.1 * torch.randn(len(xb), 1, 1, 1, generator=g))
            tmpl = torch.randint(0, len(PRETRAIN_TEMPLATES), (n_cls,), generator=g)
            tokens = captions[tmpl, torch.arange(n_cls)]
            img = F.normalize(
                model.encode_image(preprocess_tensor(xb, size, cfg["mean"], cfg["std"])), dim=-1
            )
            txt = F.normalize(model.encode_text(tokens), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.T  # [B, n_cls]
            loss_i = F.cross_entropy(logits, yb)
            onehot = F.one_hot(yb, n_cls).float().T  # [n_cls, B]
            present = onehot.sum(1) > 0
            target_t = onehot[present] / onehot[present].sum(1, keepdim=True)
            loss_t = -(target_t * logits.T[present].log_softmax(-1)).sum(1).mean()
            loss = (loss_i + loss_t) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            total += float(loss.detach()) * len(idx)
        if verbose and (epoch % 25 == 0 or epoch == epochs - 1):
            print(
                f"[tiny-clip] epoch {epoch:4d} loss {total / len(x):.4f} ({time.perf_counter() - t0:.0f} s)"
            )
    model.eval()
    del open_clip
    return model, init_emb, {"seconds": time.perf_counter() - t0, "final_loss": total / len(x)}
