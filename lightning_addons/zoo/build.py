"""Reproduce the tiny world's weights: ``python -m lightning_addons.zoo.build [--out DIR] [--only clip|unet]``.

Trains the tiny CLIP (contrastive, 200 epochs on the public 30% of digits) and the class-conditional
UNet (DDPM, 3000 steps) with fixed seeds on one CPU thread and writes ``tiny_clip.pt`` and
``tiny_unet.pt`` (default: the package's ``zoo/weights`` folder, which is what the project ships), and
records their sha256 in ``SHA256SUMS`` beside them (checked before every load).
Measured CPU time: ~160 s (CLIP) + ~430 s (UNet) on one core; run ``--only clip`` and ``--only unet``
in parallel to use two cores (~7 minutes wall on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import torch

    from lightning_addons.integrity import record_file_digest
    from lightning_addons.zoo import TINY_CLIP_FILE, TINY_UNET_FILE, WEIGHTS_DIR

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--only", choices=["clip", "unet"], default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    if args.only in (None, "clip"):
        from lightning_addons.zoo.tinyclip import pretrain_tiny_clip, save_tiny_clip

        t = time.perf_counter()
        model, init_emb, info = pretrain_tiny_clip()
        path = save_tiny_clip(model, args.out / TINY_CLIP_FILE, init_emb)
        record_file_digest(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t:.0f} s: {info}")
    if args.only in (None, "unet"):
        from lightning_addons.zoo.tinyunet import save_tiny_unet, train_tiny_unet

        t = time.perf_counter()
        unet, info = train_tiny_unet()
        path = save_tiny_unet(unet, args.out / TINY_UNET_FILE)
        record_file_digest(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t:.0f} s: {info}")


if __name__ == "__main__":
    main()
