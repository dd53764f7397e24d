"""Pure maths of the GMM filter audit (no Lightning): PCA to 2-D, Gaussian mixtures (batched torch EM and
a scikit-learn reference), the Calinski-Harabasz index, dead filters and the anomaly rules."""

from lightning_addons.gmm.audit import (
    LayerAudit,
    audit_layer,
    audit_layers,
    dead_filters,
    filter_matrix,
    sample_votes,
)
from lightning_addons.gmm.mixture import (
    MixtureFit,
    bic,
    calinski_harabasz,
    fit_gmm_sklearn,
    fit_gmm_torch,
    fit_gmm_torch_many,
)
from lightning_addons.gmm.pca import normalise_scale, project_2d
from lightning_addons.gmm.rules import (
    RULES,
    RuleInput,
    ch_outlier,
    consensus,
    effective_filters,
    get_rule,
    likelihood,
    robust_z,
    small_component,
)

__all__ = [
    "RULES",
    "LayerAudit",
    "MixtureFit",
    "RuleInput",
    "audit_layer",
    "audit_layers",
    "bic",
    "calinski_harabasz",
    "ch_outlier",
    "consensus",
    "dead_filters",
    "effective_filters",
    "filter_matrix",
    "fit_gmm_sklearn",
    "fit_gmm_torch",
    "fit_gmm_torch_many",
    "get_rule",
    "likelihood",
    "normalise_scale",
    "project_2d",
    "robust_z",
    "sample_votes",
    "small_component",
]
