"""A user's own plain ``Trainer`` (no lightning_addons callback) fitting our ``ImageClassifier``.

Run as a script by the fault tests (a fresh process, as a user would)::

    python _faults_user_trainer.py write CKPT     # fit 1 epoch, save CKPT
    python _faults_user_trainer.py resume CKPT    # fit on to epoch 2 from CKPT, print "resumed"
    python _faults_user_trainer.py load CKPT      # ImageClassifier.load_from_checkpoint(CKPT), print "loaded"
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_addons.modules import ImageClassifier


def make_model() -> ImageClassifier:
    return ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), num_classes=3)


def make_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, 4, generator=g)
    return DataLoader(TensorDataset(x, x.flatten(1)[:, :3].argmax(1)), batch_size=16)


def make_trainer(root: str, max_epochs: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root,
    )  # fmt: skip


def main(mode: str, path: str) -> None:
    torch.manual_seed(0)
    if mode == "write":
        trainer = make_trainer(str(path) + ".root", 1)
        trainer.fit(make_model(), make_loader())
        trainer.save_checkpoint(path)
    elif mode == "resume":
        make_trainer(str(path) + ".root", 2).fit(make_model(), make_loader(), ckpt_path=path)
        print("resumed")
    elif mode == "load":
        ImageClassifier.load_from_checkpoint(path, model=make_model().model)
        print("loaded")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
