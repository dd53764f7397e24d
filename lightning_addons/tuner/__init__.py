"""tuner of lightning-addons."""

__all__: list[str] = []
