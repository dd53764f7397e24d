"""A LightningModule that trains any ``[B, T, N, F] -> [B, H, N, F]`` forecaster with masked metrics."""

from __future__ import annotations

import inspect
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError

from lightning_addons.integrity import CheckpointDigestMixin

LOSSES = ("mae", "mse", "huber")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "cosine")
SPACES = ("scaled", "original", "both")


class HorizonError(Metric):
    """Masked MAE and MSE per horizon step, accumulated over batches (DDP-safe sums).

    Args:
        horizon: number of forecast steps H.

    Examples:
        >>> m = HorizonError(2)
        >>> m.update(torch.zeros(1, 2, 1, 1), torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1))
        >>> m.compute()["mae"].tolist()
        [1.0, 2.0]
    """

    full_state_update = False

    def __init__(self, horizon: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.horizon = horizon
        self.add_state("abs_sum", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_sum", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        err = (pred - target).double()
        weight = torch.ones_like(err) if mask is None else mask.to(err.dtype)
        err = torch.where(weight > 0, err, torch.zeros_like(err))
        dims = [d for d in range(err.dim()) if d != 1]
        self.abs_sum += (err.abs() * weight).sum(dim=dims)
        self.sq_sum += (err.square() * weight).sum(dim=dims)
        self.count += weight.sum(dim=dims)

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp_min(1)
        return {"mae": (self.abs_sum / count).float(), "mse": (self.sq_sum / count).float()}


def _metrics(prefix: str, postfix: str = "") -> MetricCollection:
    return MetricCollection(
        {
            "mae": MeanAbsoluteError(),
            "mse": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mape": MeanAbsolutePercentageError(),
        },
        prefix=prefix,
        postfix=postfix or None,
    )


class Forecaster(CheckpointDigestMixin, pl.LightningModule):
    """Train a forecaster with a masked loss and masked MAE/MSE/RMSE/MAPE (torchmetrics), per horizon step.

    Batches are dicts from :class:`~lightning_addons.datamodules.TimeSeriesDataModule` (``x``, ``y``,
    ``mask``, optional ``u``) or tuples ``(x, y)`` / ``(x, y, mask)``. The model is called as
    ``model(x, edge_index=..., edge_weight=..., u=...)`` with only the arguments its ``forward`` accepts
    (tsl's convention); ``edge_index`` comes from the batch or the datamodule; ``x_hist`` (history beyond
    the lookback, from ``TimeSeriesDataModule(history=...)``) is passed to models that accept it, such as
    :class:`~lightning_addons.modules.nn.SeasonalNaive`. At setup, a model's ``steps_per_day`` (time-of-day
    embedding) must agree with the datamodule's, which comes from its timestamps.

    Scaler-aware: with ``metrics_space="original"`` the datamodule's ``scaler`` inverts the z-scores
    before the metrics (the LTSF convention, default ``"scaled"``, reports normalised MSE/MAE);
    ``"both"`` reports both from one run: scaled as ``{val,test}_mae`` etc., original units as
    ``{val,test}_mae_original`` etc. (and ``mae_original``/``mse_original`` in
    :attr:`test_horizon_metrics`). The loss is always computed on the scaled data. ``predict`` returns forecasts ``[B, H, N, F]`` in
    original units when a scaler is present.

    Logged: ``train_loss``, ``{val,test}_{mae,mse,rmse,mape}``, ``test_{mae,mse}_h{k}`` for the horizon
    steps ``log_horizon_steps`` (default: every step if H <= 12, else 1, H/4, H/2, 3H/4, H). The
    full per-step arrays after a test are in :attr:`test_horizon_metrics`.

    Args:
        model: the network.
        loss: ``"mae"``, ``"mse"`` or ``"huber"``.
        lr: learning rate.
        weight_decay: weight decay.
        optimizer: ``"adam"`` or ``"adamw"``.
        scheduler: ``"none"`` or ``"cosine"`` (over ``trainer.max_epochs``).
        metrics_space: ``"scaled"``, ``"original"`` or ``"both"``.
        log_horizon_steps: 1-based horizon steps to log in test.

    Raises:
        ValueError: unknown choices, non-positive lr; at run time, NaN targets without a mask,
            ``metrics_space="original"``/``"both"`` without a datamodule scaler, prediction/target shape
            mismatch, fitting a model without trainable parameters, a model ``steps_per_day`` that
            disagrees with the datamodule's.

    Examples:
        >>> from lightning_addons.modules.nn import LinearForecaster
        >>> module = Forecaster(LinearForecaster(window=8, horizon=2), loss="mse")
        >>> module(torch.zeros(3, 8, 4, 1)).shape
        torch.Size([3, 2, 4, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Literal["mae", "mse", "huber"] = "mae",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adam", "adamw"] = "adam",
        scheduler: Literal["none", "cosine"] = "none",
        metrics_space: Literal["scaled", "original"] = "scaled",
        log_horizon_steps: list[int] | None = None,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("loss", loss, LOSSES),
            ("optimizer", optimizer, OPTIMIZERS),
            ("scheduler", scheduler, SCHEDULERS),
            ("metrics_space", metrics_space, SPACES),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}.")
        if log_horizon_steps is not None and any(
            (not isinstance(k, int)) or k < 1 for k in log_horizon_steps
        ):
            raise ValueError(
                f"`log_horizon_steps` must be 1-based positive integers, got {log_horizon_steps!r}."
            )
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self._spaces = {"scaled": ("scaled",), "original": ("original",), "both": ("scaled", "original")}[
            metrics_space
        ]
        post = {"scaled": "", "original": "_original" if metrics_space == "both" else ""}
        self._postfix = post
        self.val_metrics = _metrics("val_", post[self._spaces[0]])
        self.test_metrics = _metrics("test_", post[self._spaces[0]])
        if len(self._spaces) > 1:
            self.val_metrics_original = _metrics("val_", post["original"])
            self.test_metrics_original = _metrics("test_", post["original"])
        self.test_horizon_original: HorizonError | None = None
        self.test_horizon: HorizonError | None = None
        self.test_horizon_metrics: dict[str, list[float]] = {}
        self.scaler = None
        self.edge_index: torch.Tensor | None = None
        self.edge_weight: torch.Tensor | None = None
        params = inspect.signature(model.forward).parameters
        has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
        self._model_kwargs = {
            k for k in ("edge_index", "edge_weight", "u", "x_hist") if has_kwargs or k in params
        }

    # -- setup -------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.scaler = getattr(dm, "scaler", None)
        if self.edge_index is None and getattr(dm, "edge_index", None) is not None:
            self.edge_index = dm.edge_index
        if self.edge_weight is None and getattr(dm, "edge_weight", None) is not None:
            self.edge_weight = dm.edge_weight
        if "original" in self._spaces and self.scaler is None and stage in ("fit", "validate", "test"):
            raise ValueError(
                f"metrics_space={self.hparams.metrics_space!r} needs a datamodule with a `scaler` (e.g. "
                "TimeSeriesDataModule(scale=True)); use metrics_space='scaled' otherwise."
            )
        model_spd = getattr(self.model, "steps_per_day", None)
        uses_tod = getattr(self.model, "tod_embedding", None) is not None
        data_spd = getattr(dm, "steps_per_day", None) if dm is not None else None
        if uses_tod and model_spd is not None and data_spd is not None and model_spd != data_spd:
            raise ValueError(
                f"the model's `steps_per_day`={model_spd} disagrees with the data, which has {data_spd} steps per "
                f"day ({type(dm).__name__}, from its timestamps): the time-of-day embedding would mis-encode "
                f"every step. Build the model with steps_per_day={data_spd}."
            )

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, edge_index=None, edge_weight=None, u=None, x_hist=None
    ) -> torch.Tensor:
        kwargs = {}
        if edge_index is None and self.edge_index is not None:
            edge_index = self.edge_index.to(x.device)
            if edge_weight is None and self.edge_weight is not None:
                edge_weight = self.edge_weight.to(x.device)
        for name, value in (
            ("edge_index", edge_index),
            ("edge_weight", edge_weight),
            ("u", u),
            ("x_hist", x_hist),
        ):
            if name in self._model_kwargs and value is not None:
                kwargs[name] = value
        return self.model(x, **kwargs)

    @staticmethod
    def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict]:
        if isinstance(batch, dict):
            extra = {k: batch[k] for k in ("edge_index", "edge_weight", "u", "x_hist") if k in batch}
            return batch["x"], batch.get("y"), batch.get("mask"), extra
        if isinstance(batch, (list, tuple)):
            x = batch[0]
            y = batch[1] if len(batch) > 1 else None
            mask = batch[2] if len(batch) > 2 else None
            return x, y, mask, {}
        return batch, None, None, {}

    def _pred_target(self, batch):
        x, y, mask, extra = self._unpack(batch)
        if y is None:
            raise ValueError(
                "Training/evaluation batches need a target `y` (dict key 'y' or the 2nd tuple item)."
            )
        if mask is None:
            if torch.isnan(y).any():
                raise ValueError(
                    "the target `y` contains NaN but the batch has no `mask`: pass a mask (True = observed) "
                    "or fill missing values (TimeSeriesDataModule does both)."
                )
            mask = torch.ones_like(y, dtype=torch.bool)
        pred = self(x, **extra)
        if pred.shape != y.shape:
            raise ValueError(
                f"the model predicts shape {tuple(pred.shape)} but the target has {tuple(y.shape)}."
            )
        return pred, y, mask.bool()

    def _loss(self, pred, y, mask) -> torch.Tensor:
        if not mask.any():
            return pred.sum() * 0.0
        p, t = pred[mask], y[mask]
        if self.hparams.loss == "mae":
            return F.l1_loss(p, t)
        if self.hparams.loss == "mse":
            return F.mse_loss(p, t)
        return F.huber_loss(p, t)

    def _to_space(self, space: str, *tensors):
        if space == "original" and self.scaler is not None:
            return tuple(self.scaler.inverse_transform(t) for t in tensors)
        return tensors

    def _collection(self, stage: str, space: str) -> MetricCollection:
        if space == self._spaces[0]:
            return self.val_metrics if stage == "val" else self.test_metrics
        return self.val_metrics_original if stage == "val" else self.test_metrics_original

    # -- steps -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        pred, y, mask = self._pred_target(batch)
        loss = self._loss(pred, y, mask)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        pred, y, mask = self._pred_target(batch)
        loss = self._loss(pred, y, mask)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=y.shape[0])
        for space in self._spaces:
            p, t = self._to_space(space, pred.detach(), y)
            if mask.any():
                self._collection(stage, space).update(p[mask], t[mask])
            if stage == "test":
                self._horizon_metric(space, y.shape[1]).update(p, t, mask)

    def _horizon_metric(self, space: str, horizon: int) -> HorizonError:
        name = "test_horizon" if space == self._spaces[0] else "test_horizon_original"
        metric = getattr(self, name)
        if metric is None or metric.horizon != horizon:
            metric = HorizonError(horizon).to(self.device)
            setattr(self, name, metric)
        return metric

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        for space in self._spaces:
            metrics = self._collection("val", space)
            self.log_dict(metrics.compute(), sync_dist=True, prog_bar=False)
            metrics.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        for space in self._spaces:
            metrics = self._collection("test", space)
            self.log_dict(metrics.compute(), sync_dist=True)
            metrics.reset()
        if self.test_horizon is None:
            return
        # torchmetrics squeezes one-element results: keep per-step arrays 1-D (horizon 1)
        res = {k: torch.atleast_1d(v) for k, v in self.test_horizon.compute().items()}
        self.test_horizon.reset()
        self.test_horizon_metrics = {k: v.tolist() for k, v in res.items()}
        if self.test_horizon_original is not None:
            orig = self.test_horizon_original.compute()
            self.test_horizon_original.reset()
            self.test_horizon_metrics.update(
                {f"{k}_original": torch.atleast_1d(v).tolist() for k, v in orig.items()}
            )
        horizon = len(self.test_horizon_metrics["mae"])
        steps = self.hparams.log_horizon_steps
        if steps is None:
            steps = (
                list(range(1, horizon + 1))
                if horizon <= 12
                else sorted({1, horizon // 4, horizon // 2, 3 * horizon // 4, horizon})
            )
        for k in steps:
            if k <= horizon:
                self.log(f"test_mae_h{k}", res["mae"][k - 1])
                self.log(f"test_mse_h{k}", res["mse"][k - 1])

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x, _, _, extra = self._unpack(batch)
        pred = self(x, **extra)
        return self.scaler.inverse_transform(pred) if self.scaler is not None else pred

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{type(self.model).__name__} has no trainable parameters: evaluate it with trainer.test/predict "
                "instead of fit."
            )
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        opt = cls(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine" and self.trainer is not None and self.trainer.max_epochs:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
            return {"optimizer": opt, "lr_scheduler": sched}
        return opt
