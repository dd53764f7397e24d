"""Integrity faults: a flipped bit or a torn write in a saved state is a clear error naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_addons import integrity, zoo
from lightning_addons.callbacks import CheckpointDigest
from lightning_addons.callbacks.checkpoint_digest import verify_checkpoint
from lightning_addons.integrity import IntegrityError, load_verified, save_verified, state_digest


def _flip_bit(path: Path, member: str | None = None) -> None:
    """Flip one exponent bit of the first 4-byte value of a tensor record (``member``, else the largest)."""
    with zipfile.ZipFile(path) as zf:
        records = [i for i in zf.infolist() if "/data/" in i.filename]
        info = (
            next(i for i in records if i.filename.endswith(member))
            if member
            else max(records, key=lambda i: i.file_size)
        )
    raw = bytearray(path.read_bytes())
    off = info.header_offset
    start = (
        off
        + 30
        + int.from_bytes(raw[off + 26 : off + 28], "little")
        + int.from_bytes(raw[off + 28 : off + 30], "little")
    )
    raw[start + 3] ^= 0x40
    path.write_bytes(bytes(raw))


def _trainer(root: Path, **kw) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=root,
        callbacks=[CheckpointDigest()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )


@pytest.fixture
def lightning_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, max_steps=2)
    torch.manual_seed(0)
    trainer.fit(BoringModel())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_intact_lightning_checkpoint_with_digest_resumes(lightning_checkpoint, tmp_path):
    saved = torch.load(lightning_checkpoint, weights_only=False)["state_dict"]
    assert len(verify_checkpoint(lightning_checkpoint)) == 64
    model = BoringModel()
    _trainer(tmp_path, max_steps=3).fit(model, ckpt_path=lightning_checkpoint)
    assert not torch.equal(model.layer.weight, saved["layer.weight"])  # it trained on from the checkpoint


def test_flipped_bit_in_a_lightning_checkpoint_is_a_clear_error(lightning_checkpoint, tmp_path):
    _flip_bit(lightning_checkpoint)
    torch.load(lightning_checkpoint, weights_only=False)  # torch alone loads it silently
    with pytest.raises(IntegrityError, match=r"model.ckpt' is corrupt: its model state has sha256"):
        _trainer(tmp_path, max_steps=3).fit(BoringModel(), ckpt_path=lightning_checkpoint)
    with pytest.raises(IntegrityError, match=r"model.ckpt' is corrupt"):
        verify_checkpoint(lightning_checkpoint)


def test_torn_lightning_checkpoint_is_a_clear_error(lightning_checkpoint):
    lightning_checkpoint.write_bytes(lightning_checkpoint.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=r"model.ckpt' cannot be read .*truncated or corrupt"):
        verify_checkpoint(lightning_checkpoint)


def test_lightning_checkpoint_without_a_digest_is_refused_unless_allowed(tmp_path):
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(BoringModel())
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(IntegrityError, match=r"plain.ckpt' carries no model-state digest"):
        _trainer(tmp_path, max_steps=2).fit(BoringModel(), ckpt_path=path)
    pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[CheckpointDigest(require=False)],
    ).fit(BoringModel(), ckpt_path=path)
    with pytest.raises(ValueError, match=r"`require` must be a bool, got 'yes'"):
        CheckpointDigest(require="yes")


def test_flipped_bit_in_a_verified_state_file_is_a_clear_error(tmp_path):
    path = save_verified({"w": torch.ones(64), "round": 3}, tmp_path / "s.pt")
    assert load_verified(path)["round"] == 3
    _flip_bit(path)
    with pytest.raises(IntegrityError, match=r"s.pt' is corrupt: its content digest .* start over"):
        load_verified(path, fresh_start_hint="start over")
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(IntegrityError, match=r"plain.pt' carries no content digest"):
        load_verified(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match=r"nope.pt' does not exist"):
        load_verified(tmp_path / "nope.pt")


def test_state_digest_is_the_same_in_another_process():
    state = {
        "b": [1, 2.5, None, "x", True],
        "a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "c": torch.tensor(3),
    }
    code = (
        "import torch; from lightning_addons.integrity import state_digest; "
        "print(state_digest({'a': torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), 'c': torch.tensor(3), "
        "'b': [1, 2.5, None, 'x', True]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == state_digest(state)


@pytest.mark.parametrize(
    "other",
    [
        {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)},  # dtype
        {"a": torch.arange(6, dtype=torch.bfloat16).reshape(3, 2)},  # shape
        {"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "z": None},  # keys
        {"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3) + 1},  # values
    ],
)
def test_state_digest_changes_with_dtype_shape_keys_and_values(other):
    assert state_digest(other) != state_digest({"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)})


def test_state_digest_rejects_objects_it_cannot_hash():
    with pytest.raises(TypeError, match=r"state_digest: state\['m'\] is a object; only tensors"):
        state_digest({"m": object()})


def _zoo_copy(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (zoo.TINY_CLIP_FILE, integrity.MANIFEST):
        shutil.copy(zoo.WEIGHTS_DIR / name, folder / name)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    monkeypatch.delenv("LIGHTNING_ADDONS_ZOO_IGNORE_SHIPPED", raising=False)
    return folder


def test_shipped_weights_match_their_recorded_digests():
    for name in (zoo.TINY_CLIP_FILE, zoo.TINY_UNET_FILE):
        integrity.verify_file_digest(zoo.WEIGHTS_DIR / name)


def test_flipped_bit_in_a_tiny_world_weight_file_is_a_clear_error(tmp_path, monkeypatch):
    folder = _zoo_copy(tmp_path, monkeypatch)
    assert zoo.tiny_clip_weights() == folder / zoo.TINY_CLIP_FILE
    _flip_bit(folder / zoo.TINY_CLIP_FILE)
    with pytest.raises(IntegrityError, match=r"tiny_clip.pt' is corrupt: sha256 .*zoo.build"):
        zoo.tiny_clip_weights()


def test_tiny_world_weight_file_without_a_recorded_digest_is_refused(tmp_path, monkeypatch):
    folder = _zoo_copy(tmp_path, monkeypatch)
    (folder / integrity.MANIFEST).write_text("")
    with pytest.raises(IntegrityError, match=r"tiny_clip.pt' has no recorded digest in .*SHA256SUMS"):
        zoo.tiny_clip_weights()
