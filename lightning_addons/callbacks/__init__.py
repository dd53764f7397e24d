"""callbacks of lightning-addons."""

from lightning_addons.callbacks.flops import FlopsProfiler

__all__: list[str] = ["FlopsProfiler"]
