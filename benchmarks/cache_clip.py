"""CacheCLIPAdapter on the embedded tiny world: accuracy of zero-shot / training-free cache / fine-tuned cache /
linear probe (same features), and seconds per training epoch with cached features vs through the frozen encoder.

Reproduce:
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/cache_clip.py [--seeds 0 1 2 3 4] [--quick]

Seeds vary the cache generation (DDIM noise) and the training shuffle; the digits split is fixed (seed 0:
the tiny CLIP and UNet were pre-trained on that split's public 30%, so other split seeds would put
pre-training images into the private test set).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def _trainer(max_epochs: int, callbacks=None):
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
        num_sanity_val_steps=0,
    )


class _EpochTimer:
    def __new__(cls):
        import lightning.pytorch as pl

        class EpochTimer(pl.Callback):
            def __init__(self):
                self.times: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module):
                self._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                self.times.append(time.perf_counter() - self._t)

        return EpochTimer()


def run_seed(
    seed: int, shots: int, epochs: int, fidelity_filter: bool, generator: str = "tiny-unet"
) -> dict[str, float]:
    import lightning.pytorch as pl
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from lightning_addons.datamodules import SyntheticCacheDataModule
    from lightning_addons.modules import CacheCLIPAdapter

    pl.seed_everything(seed, verbose=False)
    synthetic = generator == "tiny-unet"
    dm = SyntheticCacheDataModule(
        generator=generator,
        shots=shots,
        fidelity_judge="reference" if synthetic else "none",
        fidelity_filter=fidelity_filter and synthetic,
        seed=seed,
    )
    module = CacheCLIPAdapter(seed=seed)
    timer = _EpochTimer()
    trainer = _trainer(epochs, [timer])
    trainer.fit(module, dm)
    res = trainer.test(module, dm, verbose=False)[0]
    # linear probe on the same cached features (train split), C chosen on validation
    (xtr, ytr), (xva, yva), (xte, yte) = (dm.split_features(s) for s in ("train", "val", "test"))
    best = (-1.0, None)
    with threadpool_limits(1):
        for c in (0.1, 1.0, 10.0, 100.0):
            clf = LogisticRegression(C=c, max_iter=3000).fit(xtr.numpy(), ytr.numpy())
            acc = clf.score(xva.numpy(), yva.numpy())
            if acc > best[0]:
                best = (acc, clf)
        probe = best[1].score(xte.numpy(), yte.numpy())
    report = dm.fidelity_report
    return {
        "zero_shot": res["test_acc_zero_shot"],
        "training_free": res["test_acc_training_free"],
        "fine_tuned": res["test_acc"],
        "linear_probe": float(probe),
        "fidelity": report["fidelity"] if synthetic else float("nan"),
        "min_class_fidelity": min(c["fidelity"] for c in report["per_class"]) if synthetic else float("nan"),
        "shots_exact": float(all(n == shots for n in module.shots_per_class)),
        "epoch_s_cached": statistics.median(timer.times[1:] or timer.times),
        "encoded_train_images": float(dm.encoded.get("train", 0)),
    }


def epoch_time_through_encoder(epochs: int) -> float:
    """Seconds per epoch when every batch goes through the frozen encoder (images, no feature cache)."""
    from lightning_addons.datamodules import DigitsDataModule, SyntheticCacheDataModule
    from lightning_addons.modules import CacheCLIPAdapter

    class ImagesOnly(DigitsDataModule):
        """The same private data, as images (no `attach_encoder`, so nothing is cached)."""

    images_dm = ImagesOnly(public_fraction=0.3, normalize=False, corruptions={"domain_shift": True}, seed=0)
    cache_dm = SyntheticCacheDataModule(shots=16, generator="real:public", fidelity_judge="none")
    module = CacheCLIPAdapter(search_alpha_beta=False)
    module.build_cache(*cache_dm.cache_set())
    timer = _EpochTimer()
    trainer = _trainer(epochs, [timer])
    trainer.fit(module, images_dm)
    return statistics.median(timer.times[1:] or timer.times)


def pure_torch_epoch_seconds(batch_size: int = 64) -> dict[str, float]:
    """One epoch of key fine-tuning without the Trainer: cached features vs through the tiny encoder, and the
    measured encoder cost of a randomly initialised ViT-B/32 (224x224) extrapolated to the same epoch."""
    import torch.nn.functional as F

    from lightning_addons.datamodules import SyntheticCacheDataModule
    from lightning_addons.modules import CacheCLIPAdapter

    dm = SyntheticCacheDataModule(generator="real:public", shots=16, fidelity_judge="none")
    module = CacheCLIPAdapter(augment_views=1)
    dm.attach_encoder(module.encode_images, module.encoder_fingerprint)
    module.build_cache(*dm.cache_set())
    x_img, y = dm.split_tensors("train")
    x_feat, _ = dm.split_features("train")
    opt = torch.optim.AdamW([module.cache_keys], lr=1e-3)

    def epoch(x):
        t = time.perf_counter()
        for i in range(0, len(x), batch_size):
            loss = F.cross_entropy(module(x[i : i + batch_size]), y[i : i + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    cached = statistics.median(epoch(x_feat) for _ in range(5))
    through = statistics.median(epoch(x_img) for _ in range(3))
    vit = CacheCLIPAdapter(class_names=["a", "b"], clip_model="ViT-B-32", pretrained=None, augment_views=1)
    _ = vit.clip  # build it outside the timing
    t = time.perf_counter()
    vit.encode_images(torch.rand(batch_size, 3, 224, 224))
    vit_epoch = (time.perf_counter() - t) * len(x_img) / batch_size
    return {"cached": cached, "through_tiny": through, "vit_b32_encode_epoch": vit_epoch, "n": len(x_img)}


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-filter", action="store_true", help="no fidelity filter on the generated cache")
    parser.add_argument(
        "--generator",
        default="tiny-unet",
        choices=["tiny-unet", "real:public", "real:train"],
        help="cache source: the tiny UNet, or a real few-shot set (public or private train split)",
    )
    parser.add_argument("--quick", action="store_true", help="one seed, 3 epochs (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 3
    print("reproduce: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/cache_clip.py " + " ".join(argv or []))
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        r = run_seed(seed, args.shots, args.epochs, not args.no_filter, args.generator)
        rows.append(r)
        print(
            f"seed {seed}: zero-shot {r['zero_shot']:.4f} training-free {r['training_free']:.4f} "
            f"fine-tuned {r['fine_tuned']:.4f} linear-probe {r['linear_probe']:.4f} fidelity {r['fidelity']:.3f} "
            f"(min class {r['min_class_fidelity']:.3f})",
            flush=True,
        )
    through = epoch_time_through_encoder(max(3, min(args.epochs, 5)))

    def ms(key):
        vals = [r[key] for r in rows]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return statistics.mean(vals), sd

    print(
        f"\nCacheCLIPAdapter, tiny world, cache from {args.generator} (filter {not args.no_filter}), K={args.shots}, "
        f"{args.epochs} epochs, seeds {args.seeds}"
    )
    print(f"{'method':<26}{'test acc (mean +/- sd)':>24}{'vs zero-shot':>14}")
    zs = ms("zero_shot")[0]
    for key, name in (
        ("zero_shot", "zero-shot CLIP"),
        ("training_free", "training-free cache"),
        ("fine_tuned", "fine-tuned cache (keys)"),
        ("linear_probe", "linear probe (same feats)"),
    ):
        m, s = ms(key)
        print(f"{name:<26}{m:>16.4f} +/- {s:.4f}{(m - zs) * 100:>+12.2f} pt")
    if args.generator == "tiny-unet":
        fm, fs = ms("fidelity")
        worst = min(r["min_class_fidelity"] for r in rows)
        print(f"generator fidelity (reference LR): {fm:.3f} +/- {fs:.3f}; min class {worst:.3f}")
    print(f"exactly K per class on every seed: {all(r['shots_exact'] == 1.0 for r in rows)}")
    cached = statistics.mean(r["epoch_s_cached"] for r in rows)
    print(
        f"\nseconds per training epoch (Trainer, incl. validation): cached features {cached:.4f}, "
        f"through the tiny encoder {through:.4f}, ratio {through / cached:.1f}x"
    )
    pure = pure_torch_epoch_seconds()
    print(
        f"seconds per training epoch ({pure['n']} images, pure torch loop): cached features {pure['cached']:.4f}, "
        f"through the tiny encoder {pure['through_tiny']:.4f} (ratio {pure['through_tiny'] / pure['cached']:.1f}x); "
        f"encoding alone through a ViT-B/32 {pure['vit_b32_encode_epoch']:.1f} "
        f"(ratio {pure['vit_b32_encode_epoch'] / pure['cached']:.0f}x)"
    )
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
