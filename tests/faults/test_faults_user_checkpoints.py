"""A checkpoint written by a user's own plain ``Trainer`` with one of our LightningModules carries a digest
(``CheckpointDigestMixin``): a flipped bit is a clear error naming the file and the key, never a silent
resume (the resume runs in a fresh process, as a user would, and must exit non-zero); checkpoints written
before digests still load."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _faults_user_trainer import make_loader, make_model, make_trainer  # noqa: E402
from test_faults_integrity import _flip_bit  # noqa: E402

from lightning_addons import integrity  # noqa: E402
from lightning_addons.callbacks import CheckpointDigest  # noqa: E402
from lightning_addons.modules import ImageClassifier  # noqa: E402

SCRIPT = str(Path(__file__).with_name("_faults_user_trainer.py"))


def _run(mode: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, mode, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=path.parent,
    )


@pytest.fixture(scope="module")
def user_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by a plain ``Trainer`` (no lightning_addons callback) with our module."""
    path = tmp_path_factory.mktemp("user") / "written.ckpt"
    torch.manual_seed(0)
    trainer = make_trainer(str(path.parent), 1)
    trainer.fit(make_model(), make_loader())
    trainer.save_checkpoint(path)
    return path


def test_a_flipped_bit_in_a_checkpoint_written_by_a_plain_user_trainer_stops_the_resume_naming_file_and_key(
    user_checkpoint, tmp_path
):
    path = tmp_path / "user.ckpt"
    shutil.copy(user_checkpoint, path)
    before = torch.load(path, weights_only=True)
    assert "keys" in before[integrity.CHECKPOINT_DIGEST_KEY]  # written by the module, no callback involved
    _flip_bit(path)
    after = torch.load(path, weights_only=True)  # torch alone loads it silently
    (key,) = [k for k, v in before["state_dict"].items() if not torch.equal(v, after["state_dict"][k])]
    res = _run("resume", path)
    assert res.returncode != 0, res.stdout
    assert f"IntegrityError: Checkpoint {str(path)!r} is corrupt" in res.stderr, res.stderr[-3000:]
    assert f"keys that differ: [{key!r}]" in res.stderr
    with pytest.raises(integrity.IntegrityError, match=rf"The checkpoint is corrupt: .*differ: \['{key}'\]"):
        ImageClassifier.load_from_checkpoint(path, model=make_model().model)


def test_a_checkpoint_without_a_digest_from_before_digests_still_resumes_and_loads(user_checkpoint, tmp_path):
    path = tmp_path / "legacy.ckpt"
    ckpt = torch.load(user_checkpoint, weights_only=True)
    del ckpt[integrity.CHECKPOINT_DIGEST_KEY]
    torch.save(ckpt, path)
    model = make_model()
    make_trainer(str(tmp_path), 2).fit(model, make_loader(), ckpt_path=path)
    assert model.current_epoch == 2  # resumed from epoch 1, trained on
    model = ImageClassifier.load_from_checkpoint(path, model=make_model().model)
    assert torch.equal(model.model[1].weight, ckpt["state_dict"]["model.1.weight"])


def test_with_the_checkpoint_digest_callback_too_a_checkpoint_is_hashed_once_on_save_and_once_on_load(
    tmp_path, monkeypatch
):
    calls = []
    real = integrity._key_digests
    monkeypatch.setattr(integrity, "_key_digests", lambda sd: calls.append(1) or real(sd))
    trainer = make_trainer(str(tmp_path), 1)
    trainer.callbacks.append(CheckpointDigest())
    trainer.fit(make_model(), make_loader())
    path = tmp_path / "both.ckpt"
    calls.clear()
    trainer.save_checkpoint(path)
    assert len(calls) == 1
    calls.clear()
    trainer = make_trainer(str(tmp_path), 2)
    trainer.callbacks.append(CheckpointDigest())
    trainer.fit(make_model(), make_loader(), ckpt_path=path)
    assert len(calls) == 1
    # and both still check: a damaged weight stops the resume
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.1.bias"][0] += 1.0
    torch.save(ckpt, path)
    trainer = make_trainer(str(tmp_path), 3)
    trainer.callbacks.append(CheckpointDigest())
    with pytest.raises(
        integrity.IntegrityError, match=r"both.ckpt' is corrupt: .*differ: \['model.1.bias'\]"
    ):
        trainer.fit(make_model(), make_loader(), ckpt_path=path)
