"""tsl (torch-spatiotemporal) interop: our RAM models in tsl's ``Predictor``, our data as tsl datasets.

This is the only module of lightning-addons that uses ``pytorch_lightning`` (tsl 0.9.5's engines are
``pytorch_lightning`` modules); train them with ``pytorch_lightning.Trainer``. Needs the extra ``tsl``
(``pip install 'lightning-addons[tsl]'``; tsl imports ``torch_scatter``/``torch_sparse``, which PyPI
ships as source only: install them from a wheel index first, see ``docs/ram.md``). Nothing here is
imported by ``import lightning_addons``.

Our models (:class:`~lightning_addons.modules.nn.STAEformer`, ``ITransformer``, ``PatchTST``) have tsl's
forward signature ``forward(x, edge_index=None, edge_weight=None, u=None)`` and map ``[B, T, N, F]`` to
``[B, H, N, F]``, so ``Predictor(model=...)`` uses them unchanged.

Example (needs tsl):
    >>> from lightning_addons.modules.nn import STAEformer  # doctest: +SKIP
    >>> dataset, dm = gpvar_datamodule(num_steps=2000, window=4)  # doctest: +SKIP
    >>> model = STAEformer(num_nodes=dataset.n_nodes, window=4, horizon=1, tod_embedding_dim=0,
    ...                    dow_embedding_dim=0, temporal_mixer="mlp")  # doctest: +SKIP
    >>> predictor = tsl_predictor(model, lr=3e-3)  # doctest: +SKIP
    >>> import pytorch_lightning  # doctest: +SKIP
    >>> pytorch_lightning.Trainer(max_epochs=5).fit(predictor, datamodule=dm)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

from lightning_addons._imports import require

#: filter of tsl's GPVARDatasetAZ (Zambon et al., NeurIPS 2022): rows = hops 0..2, columns = lags 1..2.
GPVAR_AZ_FILTER = [[5.0, 2.0], [-4.0, 6.0], [-1.0, 0.0]]


def _tsl(feature: str):
    require("torch_scatter", feature=feature)
    require("torch_sparse", feature=feature)
    return require("tsl", feature=feature)


def tsl_predictor(
    model: nn.Module,
    loss: Literal["mae", "mse"] = "mae",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    scale_target: bool = False,
):
    """A ``tsl.engines.Predictor`` training ``model`` with tsl's masked metrics (MAE, MSE, MRE).

    Args:
        model: a forecaster with tsl's forward signature (e.g. our RAM models or tsl's own).
        loss: ``"mae"`` or ``"mse"``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        scale_target: tsl's flag: compute the loss on scaled targets.

    Raises:
        ModuleNotFoundError: tsl (extra ``tsl``) is not installed.
        ValueError: unknown loss, non-positive lr.
    """
    if loss not in ("mae", "mse"):
        raise ValueError(f"`loss` must be one of ['mae', 'mse'], got {loss!r}.")
    if not lr > 0:
        raise ValueError(f"`lr` must be > 0, got {lr!r}.")
    _tsl("tsl_predictor")
    import torch
    from tsl.engines import Predictor
    from tsl.metrics import torch as tsl_metrics

    loss_fn = tsl_metrics.MaskedMAE() if loss == "mae" else tsl_metrics.MaskedMSE()
    metrics = {"mae": tsl_metrics.MaskedMAE(), "mse": tsl_metrics.MaskedMSE(), "mre": tsl_metrics.MaskedMRE()}
    return Predictor(
        model=model,
        loss_fn=loss_fn,
        metrics=metrics,
        scale_target=scale_target,
        optim_class=torch.optim.Adam,
        optim_kwargs={"lr": lr, "weight_decay": weight_decay},
    )


def gpvar_dataset(
    num_communities: int = 5,
    num_steps: int = 4000,
    filter_params: list[list[float]] | None = None,
    sigma_noise: float = 0.4,
    seed: int = 1234,
):
    """tsl's synthetic ``GPVARDataset`` (offline; known optimal MAE ``sqrt(2/pi) * sigma_noise``).

    Args:
        num_communities: triangle communities in the graph (3 nodes each).
        num_steps: length of the series.
        filter_params: graph polynomial VAR filter (default: the AZ-whiteness paper's).
        sigma_noise: noise standard deviation.
        seed: generator seed.

    Raises:
        ModuleNotFoundError: tsl is not installed.
    """
    _tsl("gpvar_dataset")
    from tsl.datasets import GPVARDataset

    class _Seeded(GPVARDataset):
        pass

    _Seeded.seed = seed
    return _Seeded(
        num_communities=num_communities,
        num_steps=num_steps,
        filter_params=filter_params or GPVAR_AZ_FILTER,
        sigma_noise=sigma_noise,
        norm="none",
    )


def gpvar_datamodule(
    num_communities: int = 5,
    num_steps: int = 4000,
    window: int = 4,
    horizon: int = 1,
    batch_size: int = 64,
    val_len: float = 0.1,
    test_len: float = 0.2,
    sigma_noise: float = 0.4,
    seed: int = 1234,
):
    """``(GPVARDataset, tsl SpatioTemporalDataModule)`` with a temporal split and no scaling.

    The torch dataset carries the noise-free optimal prediction as covariate ``optimal_pred`` so that
    the optimal model's empirical MAE can be computed on the same test windows.

    Raises:
        ModuleNotFoundError: tsl is not installed.
        ValueError: non-positive window/horizon.
    """
    for name, value in (("window", window), ("horizon", horizon), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    _tsl("gpvar_datamodule")
    from tsl.data import SpatioTemporalDataModule, SpatioTemporalDataset
    from tsl.data.datamodule.splitters import TemporalSplitter

    dataset = gpvar_dataset(num_communities, num_steps, sigma_noise=sigma_noise, seed=seed)
    torch_dataset = SpatioTemporalDataset(
        target=dataset.numpy(),
        mask=dataset.mask,
        connectivity=dataset.get_connectivity(layout="edge_index"),
        covariates={"optimal_pred": (dataset.optimal_pred, "t n f")}
        if hasattr(dataset, "optimal_pred")
        else None,
        window=window,
        horizon=horizon,
        stride=1,
    )
    dm = SpatioTemporalDataModule(
        torch_dataset, splitter=TemporalSplitter(val_len=val_len, test_len=test_len), batch_size=batch_size
    )
    dm.setup()
    return dataset, dm


def optimal_test_mae(dataset, dm) -> float:
    """Empirical MAE of the data-generating (optimal) model on ``dm``'s test windows (horizon 1)."""
    test = dm.testset
    target = dataset.numpy()
    opt = np.asarray(dataset.optimal_pred)
    idx = np.asarray(test.indices)
    horizon_idx = np.asarray(dm.torch_dataset.get_horizon_indices(idx)).reshape(-1)
    return float(np.abs(target[horizon_idx] - opt[horizon_idx]).mean())


def to_tsl_dataset(datamodule, window: int | None = None, horizon: int | None = None):
    """Wrap a :class:`~lightning_addons.datamodules.TimeSeriesDataModule`'s series as a tsl
    ``SpatioTemporalDataset`` (target, mask, graph, time features as covariate ``u``), unscaled.

    Raises:
        ModuleNotFoundError: tsl is not installed.
    """
    _tsl("to_tsl_dataset")
    from tsl.data import SpatioTemporalDataset

    datamodule._ensure_loaded()
    values = datamodule._values
    mask = ~np.isnan(values)
    covariates = None
    if datamodule._time_feats is not None:
        covariates = {"u": (datamodule._time_feats, "t f")}
    return SpatioTemporalDataset(
        target=np.nan_to_num(values),
        mask=mask,
        connectivity=None if datamodule.edge_index is None else (datamodule.edge_index, None),
        covariates=covariates,
        window=window or datamodule.lookback,
        horizon=horizon or datamodule.horizon,
    )


def fit_and_test(predictor, datamodule, epochs: int, seed: int = 0) -> dict[str, float]:
    """Train ``predictor`` with ``pytorch_lightning.Trainer`` (CPU, no logger/checkpoints) and test it.

    Returns the test metrics dict (``test_mae``, ``test_mse``, ...).

    Raises:
        ModuleNotFoundError: tsl/pytorch_lightning (extra ``tsl``) are not installed.
        ValueError: non-positive ``epochs``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"`epochs` must be a positive integer, got {epochs!r}.")
    ptl = require("pytorch_lightning", feature="fit_and_test")
    ptl.seed_everything(seed, verbose=False)
    kwargs = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    ptl.Trainer(max_epochs=epochs, limit_val_batches=0, **kwargs).fit(predictor, datamodule=datamodule)
    return ptl.Trainer(**kwargs).test(predictor, datamodule=datamodule, verbose=False)[0]
