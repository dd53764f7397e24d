"""Small CNNs for image classification (pure torch)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_addons._validate import positive as _check_positive


def _flat_features(features: nn.Module, in_channels: int, input_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, input_size, input_size)).numel())


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling; 32x32 input by default.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: multiplier of the conv and hidden widths (6, 16, 120, 84 at 1.0).
        input_size: side of the square input image (at least 12).

    Examples:
        >>> LeNet5()(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, input_size: int = 32):
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", float(width), float)
        if not isinstance(input_size, int) or input_size < 12:
            raise ValueError(f"`input_size` must be an integer >= 12 for LeNet5, got {input_size!r}.")
        c1, c2 = max(1, round(6 * width)), max(1, round(16 * width))
        h1, h2 = max(1, round(120 * width)), max(1, round(84 * width))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_features(self.features, in_channels, input_size), h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class AlexNetSmall(nn.Module):
    """An AlexNet-style CNN scaled for 32x32 inputs: five conv layers (three pooled), BatchNorm, dropout.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: multiplier of the conv widths (32, 64, 96, 96, 64 at 1.0).
        dropout: dropout before the hidden fully connected layers.
        input_size: side of the square input image (at least 8).

    Examples:
        >>> AlexNetSmall()(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.5,
        input_size: int = 32,
    ):
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _check_positive("width", float(width), float)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        if not isinstance(input_size, int) or input_size < 8:
            raise ValueError(f"`input_size` must be an integer >= 8 for AlexNetSmall, got {input_size!r}.")
        w = [max(1, round(c * width)) for c in (32, 64, 96, 96, 64)]

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(in_channels, w[0], True),
            *block(w[0], w[1], True),
            *block(w[1], w[2], False),
            *block(w[2], w[3], False),
            *block(w[3], w[4], True),
        )
        hidden = max(1, round(256 * width))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(_flat_features(self.features, in_channels, input_size), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
