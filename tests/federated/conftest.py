"""Fixtures of the federated tests: a small digits world (LeNet-5 on 32x32 digits)."""

from __future__ import annotations

import pytest
import torch

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


@pytest.fixture
def make_module():
    def make(seed: int = 0, lr: float = 3e-3, optimizer: str = "adam") -> ImageClassifier:
        torch.manual_seed(seed)
        return ImageClassifier(LeNet5(width=0.5), lr=lr, optimizer=optimizer)

    return make


@pytest.fixture
def digits():
    return DigitsDataModule(resize=32, batch_size=64)


@pytest.fixture
def small_feature_world():
    """``make(seed) -> (adapter, features)``: a cache model on the tiny CLIP with random unit keys (2 per class) and
    random unit features for train/val/test (nothing encoded: cheap). Needs open_clip."""
    pytest.importorskip("open_clip")
    import torch.nn.functional as F

    from lightning_addons.modules import CacheCLIPAdapter

    def make(seed: int = 0, n_train: int = 120):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        adapter = CacheCLIPAdapter(search_alpha_beta=False, scheduler="none")
        adapter.set_cache(
            F.normalize(torch.randn(20, 64, generator=g), dim=-1), torch.arange(10).repeat_interleave(2)
        )

        def split(n: int):
            return F.normalize(torch.randn(n, 64, generator=g), dim=-1), torch.randint(10, (n,), generator=g)

        return adapter, {"train": split(n_train), "val": split(30), "test": split(30)}

    return make


@pytest.fixture
def feature_world_config(tmp_path):
    """``write(world_path, num_clients, **federation) -> path`` of a federated YAML config naming a feature world."""
    import yaml

    def write(world, num_clients: int = 4, **federation):
        spec = {"path": str(world)}
        cfg = {
            "seed": 0,
            "model": {"class_path": "lightning_addons.experiments.feature_world_adapter", "init_args": spec},
            "data": {
                "class_path": "lightning_addons.experiments.CachedFeaturesDataModule",
                "init_args": spec,
            },
            "federation": {"num_clients": num_clients, "batch_size": 16, "rounds": 1, **federation},
        }
        path = tmp_path / "fl.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
