"""Content digests of saved state: a flipped bit or a torn write is a clear error, never a silent load.

Pure torch (no Lightning import). Three tools:

* :func:`state_digest`: a deterministic sha256 over a nested state (dicts, lists, tuples, tensors,
  numpy arrays and primitives). Equal content gives an equal digest in any process; one changed bit,
  dtype, shape or key gives another.
* :func:`save_verified` / :func:`load_verified`: ``torch.save`` a state wrapped with its digest
  (atomically: temp file + ``os.replace``) and load it back with ``weights_only=True``, checking the
  digest; a truncated, unreadable or altered file raises :class:`IntegrityError` naming the file.
* :func:`record_file_digest` / :func:`verify_file_digest`: a ``SHA256SUMS`` manifest beside files
  (the format of ``sha256sum``, so ``sha256sum -c SHA256SUMS`` checks them too), used for the tiny
  world's weight files.

Examples:
    >>> import torch, tempfile, os
    >>> state = {"w": torch.arange(3.0), "round": 2}
    >>> state_digest(state) == state_digest({"round": 2, "w": torch.arange(3.0)})
    True
    >>> state_digest(state) == state_digest({"w": torch.arange(3.0), "round": 3})
    False
    >>> path = os.path.join(tempfile.mkdtemp(), "state.pt")
    >>> _ = save_verified(state, path)
    >>> load_verified(path)["round"]
    2
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: Format tag of files written by :func:`save_verified`.
FORMAT = "lightning_addons.integrity/1"
#: Name of the digest manifest written by :func:`record_file_digest`.
MANIFEST = "SHA256SUMS"


class IntegrityError(ValueError):
    """A saved file is unreadable, truncated, or its content does not match its recorded digest."""


def _update(h: Any, obj: Any, where: str) -> None:
    def tag(t: bytes, payload: bytes = b"") -> None:
        h.update(t + struct.pack("<Q", len(payload)) + payload)

    if obj is None:
        tag(b"0")
    elif isinstance(obj, bool):
        tag(b"b", b"1" if obj else b"0")
    elif isinstance(obj, int):
        tag(b"i", str(obj).encode())
    elif isinstance(obj, float):
        tag(b"f", (repr(obj) if not math.isfinite(obj) else obj.hex()).encode())
    elif isinstance(obj, str):
        tag(b"s", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, (bytes, bytearray)):
        tag(b"y", bytes(obj))
    elif isinstance(obj, torch.dtype):
        tag(b"D", str(obj).encode())
    elif isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(
                f"state_digest: {where} is a {obj.layout} tensor; only dense tensors are supported."
            )
        t = obj.detach().to("cpu").contiguous()
        tag(b"T", f"{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, Mapping):
        tag(b"d", str(len(obj)).encode())
        keyed = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        for key, value in keyed:
            _update(h, key, f"{where} key")
            _update(h, value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        tag(b"l" if isinstance(obj, list) else b"t", str(len(obj)).encode())
        for i, value in enumerate(obj):
            _update(h, value, f"{where}[{i}]")
    else:
        import numpy as np  # lazy: only states holding numpy values need it

        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            tag(b"N", f"{a.dtype.str}|{a.shape}".encode())
            h.update(a.tobytes())
        elif isinstance(obj, np.generic):
            _update(h, obj.item(), where)
        else:
            raise TypeError(
                f"state_digest: {where} is a {type(obj).__name__}; only tensors, numpy arrays, dicts, lists, "
                "tuples and primitives (None, bool, int, float, str, bytes) are supported."
            )


def state_digest(state: Any) -> str:
    """The sha256 (hex) of a nested state of tensors and primitives; independent of dict insertion order.

    Tensors contribute their dtype, shape and raw bytes (on CPU), floats their exact bits, so two states
    have the same digest if and only if they hold the same values (up to sha256 collisions).

    Raises:
        TypeError: a value that is not a dense tensor, numpy array, dict, list, tuple or primitive.

    Examples:
        >>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.zeros(2, dtype=torch.float64)})
        False
    """
    h = hashlib.sha256()
    _update(h, state, "state")
    return h.hexdigest()


#: Key of the digest that :func:`seal` adds to a callback's checkpoint state.
SEAL_KEY = "sha256"


def seal(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` plus its :func:`state_digest` under ``"sha256"``: a callback's ``state_dict`` that
    :func:`unseal` verifies when a Lightning checkpoint is loaded.

    Examples:
        >>> sealed = seal({"epoch": 3, "w": torch.ones(2)})
        >>> unseal(sealed, "MyCallback")["epoch"]
        3
        >>> sealed["epoch"] = 4
        >>> unseal(sealed, "MyCallback")
        Traceback (most recent call last):
        ...
        lightning_addons.integrity.IntegrityError: MyCallback: its state in the checkpoint is corrupt ...
    """
    body = {k: v for k, v in state.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: state_digest(body)}


def unseal(state: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The state without its digest, after checking it; a state without a digest (written before states were
    sealed) is returned as it is.

    Raises:
        IntegrityError: the state does not match its digest (a flipped bit, an edited checkpoint).
    """
    body = {k: v for k, v in state.items() if k != SEAL_KEY}
    stored = state.get(SEAL_KEY)
    if stored is not None and state_digest(body) != stored:
        raise IntegrityError(
            f"{owner}: its state in the checkpoint is corrupt (content digest {state_digest(body)[:16]}..., "
            f"stored {str(stored)[:16]}...): the checkpoint file was damaged or edited. Resume from another "
            "checkpoint, or start the fit without `ckpt_path`."
        )
    return body


#: Top-level key of a Lightning checkpoint holding its model-state digest (written by
#: :class:`CheckpointDigestMixin` and the ``CheckpointDigest`` callback).
CHECKPOINT_DIGEST_KEY = "lightning_addons_state_digest"
#: Transient key set on a *loaded* checkpoint dict once it is verified, so the module hook and the callback
#: do not hash it twice. Its value holds a token of this process, so a file saved with it is still checked.
_VERIFIED_KEY = "lightning_addons_state_digest_verified"
_PROCESS_TOKEN = os.urandom(16).hex()


def _key_digests(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """The :func:`state_digest` of every entry of a model ``state_dict``; an entry :func:`state_digest`
    cannot hash (a module's arbitrary ``get_extra_state()``) is recorded by its type only, never refused."""

    def one(v: Any) -> str:
        try:
            return state_digest(v)
        except TypeError:
            return f"unhashed:{type(v).__qualname__}"

    return {str(k): one(v) for k, v in state_dict.items()}


def checkpoint_digest(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The digest record a Lightning checkpoint carries under :data:`CHECKPOINT_DIGEST_KEY`: one sha256 per
    ``state_dict`` key (so a mismatch names the keys) and one over them all; primitives only.

    Examples:
        >>> rec = checkpoint_digest({"w": torch.zeros(2), "b": torch.ones(1)})
        >>> sorted(rec), sorted(rec["keys"]), len(rec["sha256"])
        (['keys', 'sha256', 'version'], ['b', 'w'], 64)
    """
    keys = _key_digests(state_dict)
    return {"sha256": state_digest(keys), "keys": keys, "version": 2}


def verify_checkpoint_digest(
    checkpoint: Mapping[str, Any], source: str | None = None, require: bool = True
) -> str | None:
    """Check a loaded Lightning checkpoint's ``state_dict`` against the digest stored in it; returns the
    verified digest, or None for a checkpoint without one when ``require`` is False.

    A checkpoint already verified in this process (by the module's hook or the callback) is not hashed
    again. Digests written before per-key digests (``version`` 1: one sha256 of the ``state_dict``) are
    checked too.

    Raises:
        IntegrityError: no digest and ``require``; or the ``state_dict`` does not match the digest (the
            message names the file when ``source`` is given, and the keys that differ).

    Examples:
        >>> ckpt = {"state_dict": {"w": torch.zeros(2), "b": torch.ones(1)}}
        >>> ckpt[CHECKPOINT_DIGEST_KEY] = checkpoint_digest(ckpt["state_dict"])
        >>> ckpt["state_dict"]["w"][1] = 1e38  # a flipped exponent bit
        >>> verify_checkpoint_digest(ckpt, "epoch=3.ckpt")
        Traceback (most recent call last):
        ...
        lightning_addons.integrity.IntegrityError: Checkpoint 'epoch=3.ckpt' is corrupt: ... keys that differ: ['w'] ...
    """
    done = checkpoint.get(_VERIFIED_KEY)
    if isinstance(done, tuple) and len(done) == 2 and done[0] == _PROCESS_TOKEN:
        return done[1]
    where = f"Checkpoint {source!r}" if source else "The checkpoint"
    stored = checkpoint.get(CHECKPOINT_DIGEST_KEY)
    if not isinstance(stored, Mapping) or "sha256" not in stored:
        if not require:
            return None
        raise IntegrityError(
            f"{where} carries no model-state digest (it was not written with the CheckpointDigest callback or "
            "one of lightning_addons' LightningModules), so it cannot be verified; remove "
            "CheckpointDigest(require=True) to load it unverified."
        )
    state = checkpoint["state_dict"]
    stored_keys = stored.get("keys")
    if isinstance(stored_keys, Mapping):
        keys = _key_digests(state)
        actual = state_digest(keys)
        differ = sorted(k for k in set(keys) | set(stored_keys) if keys.get(k) != stored_keys.get(k))
    else:
        actual, differ = state_digest(state), []
    if actual != stored["sha256"]:
        shown = differ[:8] + (["..."] if len(differ) > 8 else [])
        which = f"; the keys that differ: {shown}" if differ else ""
        raise IntegrityError(
            f"{where} is corrupt: its model state has sha256 {actual}, the digest stored when it was saved is "
            f"{stored['sha256']}{which} (a flipped bit or a partial overwrite). Resume from another checkpoint."
        )
    if isinstance(checkpoint, dict):
        checkpoint[_VERIFIED_KEY] = (_PROCESS_TOKEN, actual)
    return actual


class CheckpointDigestMixin:
    """Put first among a LightningModule's bases: every checkpoint it writes carries a digest of its
    ``state_dict``, checked when one is loaded, with or without the ``CheckpointDigest`` callback.

    So a flipped bit in a checkpoint written by a plain user ``Trainer`` stops ``fit``/``validate``/
    ``test(ckpt_path=...)`` and ``load_from_checkpoint`` with an :class:`IntegrityError` naming the file
    (when the Trainer knows it) and the keys that differ, before the weights are loaded. Checkpoints
    without a digest (written before, or by another module) load unverified; add
    ``CheckpointDigest(require=True)`` to refuse them. With the callback present too, each checkpoint is
    hashed once on save and once on load. Imports no Lightning (the hooks only touch the checkpoint dict).

    Examples:
        >>> import tempfile, os
        >>> import lightning.pytorch as pl
        >>> from lightning.pytorch.demos.boring_classes import BoringModel
        >>> class MyModel(CheckpointDigestMixin, BoringModel):
        ...     pass
        >>> root = tempfile.mkdtemp()
        >>> kw = dict(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer = pl.Trainer(default_root_dir=root, **kw)
        >>> trainer.fit(MyModel())
        >>> path = os.path.join(root, "model.ckpt")
        >>> trainer.save_checkpoint(path)
        >>> ckpt = torch.load(path, weights_only=True)
        >>> ckpt["state_dict"]["layer.bias"][0] += 1.0  # corrupt one weight
        >>> torch.save(ckpt, path)
        >>> MyModel.load_from_checkpoint(path)
        Traceback (most recent call last):
        ...
        lightning_addons.integrity.IntegrityError: The checkpoint is corrupt: ... keys that differ: ['layer.bias'] ...
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        stored = checkpoint.get(CHECKPOINT_DIGEST_KEY)
        if not (isinstance(stored, Mapping) and isinstance(stored.get("keys"), Mapping)):
            # (the CheckpointDigest callback, called before this hook, may have written it already)
            checkpoint[CHECKPOINT_DIGEST_KEY] = checkpoint_digest(checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            path = self.trainer.ckpt_path  # type: ignore[attr-defined]
        except RuntimeError:  # not attached to a Trainer: ``load_from_checkpoint``
            path = None
        verify_checkpoint_digest(checkpoint, source=str(path) if path else None, require=False)
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def save_verified(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``{"format", "sha256", "state"}`` to ``path``; returns ``path``.

    Examples:
        >>> import tempfile, os
        >>> p = save_verified({"x": torch.ones(1)}, os.path.join(tempfile.mkdtemp(), "s.pt"))
        >>> sorted(torch.load(p, weights_only=True))
        ['format', 'sha256', 'state']
    """
    from lightning_addons.data import atomic_torch_save

    return atomic_torch_save({"format": FORMAT, "sha256": state_digest(state), "state": state}, path)


def load_verified(path: str | os.PathLike, fresh_start_hint: str = "") -> Any:
    """Load a file written by :func:`save_verified` (``weights_only=True``) and check its digest.

    Args:
        path: the file.
        fresh_start_hint: appended to every error (e.g. how to start a run from scratch instead).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IntegrityError: the file cannot be read (truncated, torn write, not a torch file), was not
            written by :func:`save_verified`, or its content does not match the stored digest.
    """
    path = Path(path)
    hint = f" {fresh_start_hint}" if fresh_start_hint else ""
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the same fault for the user
        raise IntegrityError(
            f"{str(path)!r} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}):"
            f" the file is truncated or corrupt.{hint}"
        ) from None
    if not isinstance(blob, Mapping) or blob.get("format") != FORMAT or "sha256" not in blob:
        raise IntegrityError(
            f"{str(path)!r} carries no content digest (format {FORMAT!r} expected): it was written by another "
            f"program or an older version, so it cannot be verified.{hint}"
        )
    actual = state_digest(blob["state"])
    if actual != blob["sha256"]:
        raise IntegrityError(
            f"{str(path)!r} is corrupt: its content digest is sha256 {actual}, the digest stored when it was "
            f"written is {blob['sha256']} (a flipped bit or a partial overwrite).{hint}"
        )
    return blob["state"]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    from lightning_addons.data import sha256sum

    return sha256sum(path)


def _read_manifest(folder: Path) -> dict[str, str]:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return {}
    out: dict[str, str] = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, _, name = line.strip().partition("  ")
            out[name.lstrip("*")] = digest
    return out


def record_file_digest(path: str | os.PathLike) -> str:
    """Record the sha256 of ``path`` in the ``SHA256SUMS`` manifest of its folder (atomic rewrite)."""
    path = Path(path)
    digest = file_sha256(path)
    entries = _read_manifest(path.parent)
    entries[path.name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(entries.items()))
    tmp = path.parent / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path.parent / MANIFEST)
    return digest


def verify_file_digest(path: str | os.PathLike, remedy: str = "") -> None:
    """Check ``path`` against the ``SHA256SUMS`` manifest of its folder.

    Raises:
        IntegrityError: no digest is recorded for the file, or the file's sha256 differs from it
            (the message names the file, both digests and ``remedy``).
    """
    path = Path(path)
    hint = f" {remedy}" if remedy else ""
    expected = _read_manifest(path.parent).get(path.name)
    if expected is None:
        raise IntegrityError(
            f"{str(path)!r} has no recorded digest in {str(path.parent / MANIFEST)!r}, so it cannot be verified.{hint}"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise IntegrityError(
            f"{str(path)!r} is corrupt: sha256 {actual}, expected {expected} (recorded in {MANIFEST}).{hint}"
        )
