"""Pure-torch corruptions of image datasets: label noise, injected outliers and domain shift.

All functions are deterministic given a ``torch.Generator`` and never modify their inputs.
Images are float tensors ``[N, C, H, W]`` with intensities in ``[0, 1]``.

Examples:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(10).repeat(10)
    >>> y_noisy, flipped = label_noise(y, 0.2, num_classes=10, generator=g)
    >>> int(flipped.sum()), bool((y_noisy[flipped] != y[flipped]).all())
    (20, True)
"""

from __future__ import annotations

from typing import Any

import torch

CORRUPTIONS = ("label_noise", "outliers", "domain_shift")
SHIFT_KEYS = ("gain", "offset", "noise_std", "roll", "rotation")
DEFAULT_SHIFT: dict[str, float] = {"gain": 0.7, "offset": 0.15, "noise_std": 0.1, "roll": 1, "rotation": 0.0}


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a fraction in [0, 1], got {value!r}.")
    return float(value)


def _wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label different from ``y`` for each entry, uniformly among the other classes."""
    offset = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y + offset) % num_classes


def label_noise(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace exactly ``round(fraction * len(y))`` labels by a different class.

    Returns:
        The noisy labels and a boolean mask of the changed entries.
    """
    fraction = _check_fraction("label_noise", fraction)
    n = len(y)
    count = int(round(fraction * n))
    flipped = torch.zeros(n, dtype=torch.bool)
    y_new = y.clone()
    if count:
        idx = torch.randperm(n, generator=generator)[:count]
        flipped[idx] = True
        y_new[idx] = _wrong_labels(y[idx], num_classes, generator)
    return y_new, flipped


def inject_outliers(
    x: torch.Tensor, y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Make ``round(fraction * len(x))`` outliers: intensity-inverted copies of random samples with wrong labels.

    Returns:
        The outlier images, their (wrong) labels and the indices of the samples they were copied from.
    """
    fraction = _check_fraction("outliers", fraction)
    count = int(round(fraction * len(x)))
    src = torch.randperm(len(x), generator=generator)[:count]
    return 1.0 - x[src], _wrong_labels(y[src], num_classes, generator), src


def resolve_shift(spec: Any) -> dict[str, float]:
    """Normalise a domain-shift spec (``True`` for defaults, or a dict with keys from ``SHIFT_KEYS``)."""
    if spec is True:
        return dict(DEFAULT_SHIFT)
    if not isinstance(spec, dict):
        raise ValueError(
            f"`corruptions['domain_shift']` must be True or a dict with keys {list(SHIFT_KEYS)}, got {spec!r}."
        )
    unknown = sorted(set(spec) - set(SHIFT_KEYS))
    if unknown:
        raise ValueError(f"Unknown domain_shift keys {unknown}; allowed keys are {list(SHIFT_KEYS)}.")
    out = {"gain": 1.0, "offset": 0.0, "noise_std": 0.0, "roll": 0, "rotation": 0.0}
    out.update({k: float(v) for k, v in spec.items()})
    if out["noise_std"] < 0:
        raise ValueError(f"`domain_shift['noise_std']` must be >= 0, got {out['noise_std']}.")
    if out["roll"] < 0 or out["roll"] != int(out["roll"]):
        raise ValueError(f"`domain_shift['roll']` must be a non-negative integer, got {out['roll']}.")
    return out


def domain_shift(x: torch.Tensor, spec: Any, generator: torch.Generator) -> torch.Tensor:
    """Apply ``gain * x + offset + N(0, noise_std)``, a random roll of ``roll`` pixels along one
    random axis and direction, and a random rotation in ``[-rotation, rotation]`` degrees.

    The result is *not* clipped, so the shift's statistics are exactly those requested.
    """
    p = resolve_shift(spec)
    out = x.clone()
    if p["rotation"] > 0:
        from torchvision.transforms.functional import rotate

        angles = (torch.rand(len(out), generator=generator) * 2 - 1) * p["rotation"]
        out = torch.stack([rotate(img, float(a)) for img, a in zip(out, angles)])
    roll = int(p["roll"])
    if roll:
        axis = torch.randint(0, 2, (len(out),), generator=generator)
        sign = torch.randint(0, 2, (len(out),), generator=generator) * 2 - 1
        out = torch.stack(
            [torch.roll(img, shifts=int(s) * roll, dims=int(a) - 2) for img, a, s in zip(out, axis, sign)]
        )
    out = out * p["gain"] + p["offset"]
    if p["noise_std"] > 0:
        out = out + torch.randn(out.shape, generator=generator) * p["noise_std"]
    return out


def validate_corruptions(corruptions: dict[str, Any] | None) -> dict[str, Any]:
    """Check corruption names and values; returns a clean copy."""
    if corruptions is None:
        return {}
    if not isinstance(corruptions, dict):
        raise ValueError(
            f"`corruptions` must be a dict mapping names {list(CORRUPTIONS)} to values, got {corruptions!r}."
        )
    unknown = sorted(set(corruptions) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown corruption name(s) {unknown} in `corruptions`; allowed names are {list(CORRUPTIONS)}."
        )
    out = dict(corruptions)
    for key in ("label_noise", "outliers"):
        if key in out:
            out[key] = _check_fraction(key, out[key])
    if "domain_shift" in out:
        if out["domain_shift"] in (False, None):
            del out["domain_shift"]
        else:
            out["domain_shift"] = resolve_shift(out["domain_shift"])
    return out
