"""ImageClassifier + the small CNNs: shapes, training on digits, errors."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import AlexNetSmall, LeNet5


@pytest.mark.parametrize("cls", [LeNet5, AlexNetSmall])
@pytest.mark.parametrize("channels,size", [(1, 32), (3, 32), (1, 16)])
def test_cnns_map_images_to_logits(cls, channels, size):
    net = cls(in_channels=channels, num_classes=7, input_size=size)
    assert net(torch.zeros(3, channels, size, size)).shape == (3, 7)


def test_width_scales_the_parameter_count():
    small = sum(p.numel() for p in LeNet5(width=0.5).parameters())
    big = sum(p.numel() for p in LeNet5(width=2.0).parameters())
    assert big > 4 * small


@pytest.mark.stochastic
def test_lenet_learns_digits_in_a_few_epochs(tmp_path, seed_offset):
    pl.seed_everything(seed_offset)
    dm = DigitsDataModule(resize=32, batch_size=64, return_indices=True, seed=seed_offset)
    module = ImageClassifier(LeNet5(), lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    (res,) = trainer.test(module, datamodule=dm, verbose=False)
    assert res["test_acc"] >= 0.85
    probs = torch.cat(trainer.predict(module, datamodule=dm))
    assert probs.shape == (len(dm.dataset("test")), 10)
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"optimizer": "lbfgs"}, r"`optimizer` must be one of \['adam', 'adamw', 'sgd'\], got 'lbfgs'"),
        ({"scheduler": "step"}, r"`scheduler` must be one of \['none', 'cosine'\], got 'step'"),
        ({"lr": 0.0}, r"`lr` must be > 0, got 0.0"),
        ({"num_classes": 1}, r"`num_classes` must be an integer >= 2, got 1"),
    ],
)
def test_classifier_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageClassifier(LeNet5(), **kwargs)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (LeNet5, {"input_size": 8}, r"`input_size` must be an integer >= 12 for LeNet5, got 8"),
        (LeNet5, {"width": 0.0}, r"`width` must be a positive float, got 0.0"),
        (AlexNetSmall, {"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        (AlexNetSmall, {"in_channels": 0}, r"`in_channels` must be a positive int, got 0"),
    ],
)
def test_cnns_reject_bad_settings(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
