"""A small class-conditional diffusers ``UNet2DModel`` on 8x8 digits: DDPM training and a DDIM sampler.

``diffusers.DDPMPipeline`` takes no class labels, so :func:`sample_ddim` is the DDIM loop written
against ``diffusers.DDIMScheduler`` (``set_timesteps`` / ``step``), with classifier-free guidance: the
UNet has ``num_classes + 1`` class embeddings, the last one being the "no label" class used with
probability ``p_uncond`` during training.

Examples:
    >>> import torch
    >>> from lightning_addons.zoo.tinyunet import create_tiny_unet, sample_ddim
    >>> unet, scheduler = create_tiny_unet(pretrained=False)
    >>> x = sample_ddim(unet, scheduler, torch.tensor([3, 7]), steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), bool(((x >= 0) & (x <= 1)).all())
    ((2, 1, 8, 8), True)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_addons._imports import require

NUM_CLASSES = 10
IMAGE_SIZE = 8
NUM_TRAIN_TIMESTEPS = 1000

UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    add_attention=False,
    num_class_embeds=NUM_CLASSES + 1,  # the last embedding is the unconditional ("null") class
)


def _scheduler():
    diffusers = require("diffusers", feature="The tiny UNet generator")
    return diffusers.DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )


def create_tiny_unet(pretrained: bool = True, weights: str | os.PathLike | None = None):
    """The tiny UNet (eval mode) and its DDPM noise scheduler.

    Args:
        pretrained: load the project's weights (shipped, cached or trained now, see
            :func:`lightning_addons.zoo.tiny_unet_weights`); ``False`` gives random initialisation.
        weights: an explicit weights file written by :func:`save_tiny_unet`.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
    """
    diffusers = require("diffusers", feature="The tiny UNet generator")
    unet = diffusers.UNet2DModel(**UNET_CONFIG)
    if weights is not None or pretrained:
        if weights is None:
            from lightning_addons.zoo import tiny_unet_weights

            weights = tiny_unet_weights()
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Tiny UNet weights file {str(path)!r} does not exist.")
        from lightning_addons.zoo.tinyclip import check_fingerprint

        state = torch.load(path, map_location="cpu", weights_only=True)
        check_fingerprint(state, path)
        unet.load_state_dict(state, strict=True)
    return unet.eval(), _scheduler()


def save_tiny_unet(unet: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write the UNet's state dict atomically (temp file + ``os.replace``)."""
    from lightning_addons.data import atomic_torch_save
    from lightning_addons.zoo.tinyclip import public_split_fingerprint

    state = {k: v.detach().float().clone() for k, v in unet.state_dict().items()}
    state["public_split_sha256"] = public_split_fingerprint()
    return atomic_torch_save(state, path)


def train_tiny_unet(
    steps: int = 3000,
    batch_size: int = 128,
    lr: float = 2e-3,
    p_uncond: float = 0.1,
    seed: int = 0,
    verbose: bool = True,
):
    """DDPM training (epsilon prediction) on the public digits split, scaled to [-1, 1].

    Returns:
        The trained UNet (eval mode) and a summary dict.
    """
    from lightning_addons.zoo.tinyclip import digits_public_images

    torch.manual_seed(seed)
    unet, scheduler = create_tiny_unet(pretrained=False)
    unet.train()
    x, y = digits_public_images()
    x = x * 2 - 1
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.perf_counter()
    running = 0.0
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        x0, labels = x[idx], y[idx].clone()
        labels[torch.rand(batch_size, generator=g) < p_uncond] = NUM_CLASSES
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch_size,), generator=g)
        xt = scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, class_labels=labels).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        if verbose and (step % 500 == 0 or step == steps - 1):
            print(f"[tiny-unet] step {step:5d} loss {running:.4f} ({time.perf_counter() - t0:.0f} s)")
    return unet.eval(), {"seconds": time.perf_counter() - t0, "final_loss": running}


@torch.no_grad()
def sample_ddim(
    unet: torch.nn.Module,
    scheduler,
    labels: torch.Tensor,
    steps: int = 25,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Class-conditional DDIM sampling with classifier-free guidance.

    Args:
        unet: a class-conditional ``UNet2DModel`` whose last class embedding is the null class.
        scheduler: the training noise scheduler (its config builds the ``DDIMScheduler``).
        labels: class indices ``[B]``.
        steps: DDIM steps.
        guidance_scale: ``eps = eps_uncond + s * (eps_cond - eps_uncond)``; 1 disables guidance.
        eta: DDIM stochasticity (0 = deterministic given the initial noise).
        generator: seeds the initial noise (and the noise of ``eta > 0``).

    Returns:
        Images ``[B, C, H, W]`` with intensities in [0, 1].
    """
    diffusers = require("diffusers", feature="DDIM sampling")
    ddim = diffusers.DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    device = next(unet.parameters()).device
    labels = labels.to(device=device, dtype=torch.long)
    x = torch.randn((len(labels), cfg.in_channels, size, size), generator=generator).to(device)
    null = torch.full_like(labels, cfg.num_class_embeds - 1)
    for t in ddim.timesteps:
        if guidance_scale == 1.0:
            eps = unet(x, t, class_labels=labels).sample
        else:
            both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        x = ddim.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return ((x.clamp(-1, 1) + 1) / 2).cpu()
