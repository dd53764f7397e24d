"""Faults in the auditor's and the pruning callback's state inside a Lightning checkpoint: a damaged state is
a clear error naming the callback, never loaded; an intact one resumes."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.callbacks import AnomalyFilterPruning, GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.integrity import IntegrityError
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


def _trainer(tmp_path, callbacks, **kw):
    opts = dict(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(tmp_path), callbacks=callbacks,
    )  # fmt: skip
    opts.update(kw)
    return pl.Trainer(**opts)


def _auditor(tmp_path):
    return GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)


def test_a_damaged_auditor_state_in_a_lightning_checkpoint_is_a_clear_error(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(resize=32)
    trainer = _trainer(tmp_path, [_auditor(tmp_path)])
    trainer.fit(ImageClassifier(LeNet5()), dm)
    path = tmp_path / "audited.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("GMMFilterAuditor")]
    assert "sha256" in ckpt["callbacks"][key]
    # an intact checkpoint resumes
    _trainer(tmp_path, [_auditor(tmp_path)], max_epochs=2).fit(
        ImageClassifier(LeNet5()), dm, ckpt_path=str(path)
    )
    ckpt["callbacks"][key]["audit_seconds"] += 1e-9  # one changed value, as a flipped bit would
    torch.save(ckpt, path)
    with pytest.raises(IntegrityError, match=r"GMMFilterAuditor: its state in the checkpoint is corrupt"):
        _trainer(tmp_path, [_auditor(tmp_path)], max_epochs=2).fit(
            ImageClassifier(LeNet5()), dm, ckpt_path=str(path)
        )


def test_a_damaged_pruning_state_is_a_clear_error_and_an_intact_one_loads():
    pruning = AnomalyFilterPruning(criterion="l1", epochs=1)
    pruning.masks = {"model.features.0": torch.tensor([True, False, True])}
    state = pruning.state_dict()
    fresh = AnomalyFilterPruning(criterion="l1", epochs=1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.masks["model.features.0"], pruning.masks["model.features.0"])
    state["masks"]["model.features.0"] = torch.tensor([True, True, True])  # a pruned filter would grow back
    with pytest.raises(IntegrityError, match=r"AnomalyFilterPruning: its state in the checkpoint is corrupt"):
        AnomalyFilterPruning(criterion="l1", epochs=1).load_state_dict(state)


def test_a_callback_state_written_before_states_were_sealed_still_loads():
    legacy = {"version": 1, "masks": {}, "events": [], "last_epoch": 3, "reductions": {}}
    pruning = AnomalyFilterPruning(criterion="l1", epochs=1)
    pruning.load_state_dict(legacy)
    assert pruning._last_epoch == 3


def test_a_flipped_weight_in_a_checkpoint_written_by_the_cli_stops_the_resumed_fit(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "examples" / "configs" / "digits_lenet.yaml"
    args = [
        sys.executable, "-m", "lightning_addons.cli", "fit", "--config", str(config),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path), "--test_after_fit", "false",
    ]  # fmt: skip
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (ckpt_path,) = list(tmp_path.rglob("*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert "lightning_addons_state_digest" in ckpt  # the CLI adds CheckpointDigest by default
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key].view(-1)[0] = 4.8e37  # what one flipped exponent bit does to a weight
    torch.save(ckpt, ckpt_path)
    resumed = subprocess.run(
        [*args[:-2], "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode != 0
    assert "is corrupt: its model state has sha256" in resumed.stderr and str(ckpt_path) in resumed.stderr
