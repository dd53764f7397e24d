"""CacheCLIPAdapter on a CUDA device: the embedded-world acceptance margins hold when the cache trains on a
GPU, and only the cache keys change there (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip")
pytest.importorskip("diffusers")

import lightning.pytorch as pl  # noqa: E402

from lightning_addons.datamodules import SyntheticCacheDataModule  # noqa: E402
from lightning_addons.modules import CacheCLIPAdapter  # noqa: E402

pytestmark = pytest.mark.gpu


def test_cache_adapter_trains_on_the_gpu_and_keeps_clip_frozen():
    pl.seed_everything(0, verbose=False)
    dm = SyntheticCacheDataModule(generator="tiny-unet", shots=16, fidelity_filter=True, seed=0)
    module = CacheCLIPAdapter(seed=0)
    seen: dict = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["device"] = pl_module.cache_keys.device.type
            seen["keys"] = pl_module.cache_keys.detach().clone()
            seen["clip"] = {k: v.clone() for k, v in pl_module.clip.state_dict().items()}

        def on_train_end(self, trainer, pl_module):
            seen["keys_end"] = pl_module.cache_keys.detach().clone()
            seen["clip_same"] = all(
                torch.equal(v, seen["clip"][k]) for k, v in pl_module.clip.state_dict().items()
            )

    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Snapshot()],
    )
    trainer.fit(module, dm)
    res = trainer.test(module, dm, verbose=False)[0]
    assert seen["device"] == "cuda"
    assert seen["clip_same"] and not torch.equal(seen["keys"], seen["keys_end"])
    assert module.shots_per_class == [16] * 10
    # the CPU acceptance margins (tests/modules/test_cache_clip.py), on the GPU
    assert res["test_acc_training_free"] >= res["test_acc_zero_shot"] + 0.01, res
    assert res["test_acc"] >= res["test_acc_zero_shot"] + 0.03, res
