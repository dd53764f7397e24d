"""callbacks of lightning-addons."""

from lightning_addons.callbacks.gmm_auditor import GMMFilterAuditor
from lightning_addons.callbacks.pruning import AnomalyFilterPruning

__all__: list[str] = ["AnomalyFilterPruning", "GMMFilterAuditor"]
