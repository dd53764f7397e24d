"""CheckpointDigest: a sha256 of the model's weights inside every Lightning checkpoint, checked on load."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from lightning_addons.integrity import (
    CHECKPOINT_DIGEST_KEY,
    IntegrityError,
    checkpoint_digest,
    verify_checkpoint_digest,
)

#: Top-level checkpoint key holding the digest.
DIGEST_KEY = CHECKPOINT_DIGEST_KEY


def verify_checkpoint(checkpoint: Mapping[str, Any] | str | os.PathLike, source: str | None = None) -> str:
    """Check a Lightning checkpoint (a loaded dict or a path) against the digest :class:`CheckpointDigest`
    (or a module with :class:`~lightning_addons.integrity.CheckpointDigestMixin`) stored.

    Returns the verified digest.

    Raises:
        IntegrityError: the checkpoint carries no digest, or its ``state_dict`` does not match it
            (the message names the file and the keys that differ).
    """
    if not isinstance(checkpoint, Mapping):
        import torch

        source = str(checkpoint)
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - unreadable is one fault for the user
            raise IntegrityError(
                f"Checkpoint {source!r} cannot be read ({type(err).__name__}): truncated or corrupt."
            ) from None
    return verify_checkpoint_digest(checkpoint, source, require=True)


class CheckpointDigest(pl.Callback):
    """Store a sha256 of the model's ``state_dict`` in every checkpoint and verify it when one is loaded.

    With the callback in the Trainer, a checkpoint whose weights changed after saving (a flipped bit,
    a partial overwrite) stops ``fit``/``validate``/``test(ckpt_path=...)`` with an
    :class:`~lightning_addons.integrity.IntegrityError` naming the file, instead of training on from
    silently corrupted weights. The digest is a primitive (a string) at the checkpoint's top level, so
    checkpoints stay ``weights_only``-loadable. :func:`verify_checkpoint` checks a file without a Trainer.

    Lightning restores the weights before it calls callbacks, so the check runs after the module holds
    them but before any step, and the run stops. Checkpoints saved with ``save_weights_only=True`` carry
    no digest from the callback (Lightning calls no callback for them): load those with ``require=False``,
    unless the module writes its own (:class:`~lightning_addons.integrity.CheckpointDigestMixin`: our
    LightningModules do, with or without this callback; a checkpoint is then hashed once, not twice).

    Args:
        require: refuse checkpoints that carry no digest (written without this callback); with
            ``False`` they load unverified.

    Raises:
        ValueError: ``require`` is not a bool.

    Examples:
        >>> import tempfile, os, torch
        >>> from lightning.pytorch.demos.boring_classes import BoringModel
        >>> root = tempfile.mkdtemp()
        >>> kw = dict(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer = pl.Trainer(default_root_dir=root, callbacks=[CheckpointDigest()], **kw)
        >>> trainer.fit(BoringModel())
        >>> path = os.path.join(root, "model.ckpt")
        >>> trainer.save_checkpoint(path)
        >>> len(verify_checkpoint(path))
        64
        >>> ckpt = torch.load(path, weights_only=False)
        >>> ckpt["state_dict"]["layer.bias"][0] += 1.0  # corrupt one weight
        >>> torch.save(ckpt, path)
        >>> trainer = pl.Trainer(default_root_dir=root, callbacks=[CheckpointDigest()], **kw)
        >>> trainer.validate(BoringModel(), ckpt_path=path, verbose=False)
        Traceback (most recent call last):
        ...
        lightning_addons.integrity.IntegrityError: Checkpoint '...model.ckpt' is corrupt: ...
    """

    def __init__(self, require: bool = True) -> None:
        if not isinstance(require, bool):
            raise ValueError(f"`require` must be a bool, got {require!r}.")
        self.require = require

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[DIGEST_KEY] = checkpoint_digest(checkpoint["state_dict"])

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if DIGEST_KEY not in checkpoint and not self.require:
            return
        path = getattr(trainer, "ckpt_path", None)
        verify_checkpoint(checkpoint, source=str(path) if path else None)
