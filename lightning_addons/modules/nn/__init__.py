"""Pure-torch building blocks (no Lightning import)."""

from lightning_addons.modules.nn.cnn import AlexNetSmall, LeNet5

__all__ = ["AlexNetSmall", "LeNet5"]
