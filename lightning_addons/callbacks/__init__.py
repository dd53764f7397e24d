"""callbacks of lightning-addons."""

from lightning_addons.callbacks.gmm_auditor import GMMFilterAuditor

__all__: list[str] = ["GMMFilterAuditor"]
