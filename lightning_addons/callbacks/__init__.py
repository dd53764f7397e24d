"""callbacks of lightning-addons."""

from lightning_addons.callbacks.energy import EnergyMeter

__all__: list[str] = ["EnergyMeter"]
