"""The torch backend on a CUDA device: the same verdicts as on the CPU (skipped without a GPU)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.callbacks import GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.gmm import audit_layers, fit_gmm_torch_many
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5

pytestmark = pytest.mark.gpu


def _blobs(b: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    sizes = (120, 60, 20)
    return torch.stack(
        [torch.cat([torch.randn(s, 2, generator=g) + c for s, c in zip(sizes, centres)]) for _ in range(b)]
    )


def test_batched_em_on_cuda_gives_the_cpu_labels_on_separated_blobs():
    pts = _blobs().double()
    cpu = fit_gmm_torch_many(pts, [2, 3, 4], seed=0)
    gpu = fit_gmm_torch_many(pts.cuda(), [2, 3, 4], seed=0)
    for a, b in zip(cpu, gpu):
        assert b.labels.device.type == "cuda"
        assert torch.equal(a.labels, b.labels.cpu())
        torch.testing.assert_close(a.means, b.means.cpu(), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(a.log_prob, b.log_prob.cpu(), rtol=1e-6, atol=1e-8)


def test_audit_of_cuda_maps_matches_the_cpu_audit():
    g = torch.Generator().manual_seed(0)
    maps = {"a": torch.randn(256, 6, 8, 8, generator=g), "b": torch.randn(256, 4, 4, 4, generator=g)}
    maps["a"][:8] += 9.0  # 8 outlying samples every filter of layer "a" sees
    cpu = audit_layers(maps, seed=0)
    gpu = audit_layers({k: v.cuda() for k, v in maps.items()}, seed=0)
    for name in maps:
        assert torch.equal(cpu[name].k, gpu[name].k)
        assert torch.equal(cpu[name].anomaly, gpu[name].anomaly)
        assert torch.equal(cpu[name].flagged, gpu[name].flagged)
        torch.testing.assert_close(cpu[name].ch, gpu[name].ch, rtol=1e-4, atol=1e-6)
    assert bool(gpu["a"].flagged[:, :8].any())


def test_auditor_in_a_gpu_trainer_audits_on_the_gpu_with_the_cpu_verdicts(tmp_path):
    pl.seed_everything(0)
    dm = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True)
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=256, figures="none", save_tables=False)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[auditor],
    )
    module = ImageClassifier(LeNet5(), lr=3e-3)
    trainer.fit(module, dm)
    assert len(auditor.history) == 2
    # the same weights audited on the CPU give the same verdicts
    module.cpu()
    maps_cpu = auditor._capture(module, auditor._x)
    module.cuda()
    maps_gpu = auditor._capture(module, auditor._x)
    assert next(iter(maps_gpu.values())).device.type == "cuda"
    cpu, gpu = auditor.audit_maps(maps_cpu), auditor.audit_maps(maps_gpu)
    verdicts = [(a["anomaly"], b["anomaly"]) for a, b in zip(cpu["filters"], gpu["filters"])]
    agree = sum(a == b for a, b in verdicts) / len(verdicts)
    assert agree >= 0.95, f"only {agree:.1%} of the filters got the same verdict on CPU and GPU"
    same_k = sum(a["k"] == b["k"] for a, b in zip(cpu["filters"], gpu["filters"]) if not a["dead"])
    assert same_k >= 0.8 * sum(not a["dead"] for a in cpu["filters"])


def test_audit_device_cpu_keeps_the_maps_of_a_gpu_model_on_the_cpu():
    pl.seed_everything(0)
    module = ImageClassifier(LeNet5()).cuda()
    x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    on_gpu = GMMFilterAuditor(max_samples=64, figures="none", save_tables=False)
    on_cpu = GMMFilterAuditor(max_samples=64, figures="none", save_tables=False, audit_device="cpu")
    for a in (on_gpu, on_cpu):
        a._layer_names = a.resolve_layers(module)
    maps_gpu, maps_cpu = on_gpu._capture(module, x), on_cpu._capture(module, x)
    assert {m.device.type for m in maps_gpu.values()} == {"cuda"}
    assert {m.device.type for m in maps_cpu.values()} == {"cpu"}
    a, b = on_gpu.audit_maps(maps_gpu), on_cpu.audit_maps(maps_cpu)
    agree = sum(f["anomaly"] == g["anomaly"] for f, g in zip(a["filters"], b["filters"])) / len(a["filters"])
    assert agree >= 0.9
