"""AnomalyFilterPruning: prune whole conv filters (output channels) by GMM-audit verdicts or a baseline criterion."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.utils import prune

from lightning_addons.callbacks.gmm_auditor import GMMFilterAuditor
from lightning_addons.gmm.capture import run_with_hooks
from lightning_addons.integrity import seal, unseal

CRITERIA = ("anomaly", "l1", "apoz", "random", "low_ch")
MODES = ("mask", "physical")


def following_batchnorm(module: nn.Module, conv_name: str) -> str | None:
    """Name of the ``BatchNorm2d`` registered right after conv ``conv_name`` (same channel count, no other conv
    or linear layer in between), or ``None``. Registration order follows ``nn.Sequential`` and typical blocks."""
    named = list(module.named_modules())
    names = [n for n, _ in named]
    conv = dict(named)[conv_name]
    for name, m in named[names.index(conv_name) + 1 :]:
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return None
        if isinstance(m, nn.BatchNorm2d):
            return name if m.num_features == conv.out_channels else None
    return None


def fold_pruning_masks(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state dict from one holding ``torch.nn.utils.prune`` state: ``<p>_orig * <p>_mask`` under
    ``<p>`` (loads strictly into the unpruned model class); other keys are copied."""
    out = dict(state_dict)
    for key in [k for k in state_dict if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base + "_mask" in state_dict:
            out[base] = out.pop(key) * out.pop(base + "_mask")
    return out


class AnomalyFilterPruning(pl.Callback):
    """Prune whole output channels of conv layers at a schedule, by GMM-audit anomaly or a baseline criterion.

    Every criterion shares one mechanism, so baselines compare fairly: ``anomaly`` (the auditor's anomaly
    filters, most anomalous first), ``l1`` (smallest L1 norm), ``apoz`` (highest average percentage of
    non-positive outputs, measured after the following BatchNorm on the auditor's subset or on training
    batches), ``random`` (seeded) and ``low_ch`` (lowest CH index in the last audit). At most ``max_fraction``
    of a layer's filters (and never all) are pruned in total.

    ``mode="mask"`` (default) uses ``torch.nn.utils.prune``: the weight, the bias and the following
    BatchNorm's weight and bias are masked, so pruned filters output exactly zero through further training.
    The masks are the model's state: checkpoints written during fit hold ``torch.nn.utils.prune``'s keys
    (``<param>_orig``, ``<param>_mask``), whatever this callback's settings. Resuming with this callback (any
    criterion or settings) re-attaches them from the checkpoint (a ``load_state_dict`` pre-hook registered in
    ``setup``) before Lightning matches the keys; resuming without it fails in Lightning's strict load, naming the ``_orig``/``_mask`` keys (never
    a silent regrowth of pruned filters). :func:`fold_pruning_masks` turns such a state dict into a plain one
    for inference. At the end of fit (and test) the masks are folded into the weights: the model is a plain
    model again, its pruned filters zero. Audit-based pruning (``anomaly``, ``low_ch``, ``amount=None``) runs a
    full audit at the pruning epoch when the auditor's last audit is not from the epoch just finished.
    ``mode="physical"`` removes the channels with Torch-Pruning's dependency graph (extra ``prune``),
    re-creates the optimizers and logs the parameter and FLOP reductions (checkpoints then hold the smaller
    architecture: resuming them into the original model is not supported).

    Args:
        auditor: the :class:`GMMFilterAuditor` whose last audit gives anomaly sets and CH values (``None``: the
            first ``GMMFilterAuditor`` among the Trainer's callbacks, so YAML configs need no object link).
        anomaly_sets: fixed ``{layer: [filter indices]}`` instead of an auditor.
        criterion: ``"anomaly"``, ``"l1"``, ``"apoz"``, ``"random"`` or ``"low_ch"``.
        epochs: when to prune, at the start of training epoch ``e`` (0-based): one epoch, a list of epochs
            or a callable ``epoch -> bool``.
        amount: filters per layer per pruning event: ``None`` prunes as many as the layer's anomaly set (the
            equal-count protocol of the baselines), an ``int`` a count, a ``float`` in (0, 1) a fraction.
        max_fraction: cap of the total pruned fraction per layer (a layer always keeps at least one filter).
        layers: conv layers that may be pruned (default: the auditor's layers, else every ``nn.Conv2d``).
        ignored_layers: layers never pruned.
        mode: ``"mask"`` or ``"physical"``.
        seed: seed of the ``random`` criterion.
        apoz_samples: samples used to measure APoZ when there is no auditor subset.

    Raises:
        ValueError: unknown criterion/mode, bad schedule or amounts; at setup: ``anomaly``/``low_ch`` (or
            ``amount=None``) without an auditor (or ``anomaly_sets``), unknown or non-conv layer names.
        ModuleNotFoundError: ``mode="physical"`` without ``torch-pruning`` (names the extra).

    Examples:
        >>> import lightning.pytorch as pl
        >>> from lightning_addons.datamodules import DigitsDataModule
        >>> from lightning_addons.modules import ImageClassifier
        >>> from lightning_addons.modules.nn import LeNet5
        >>> pruning = AnomalyFilterPruning(criterion="l1", amount=2, epochs=1)
        >>> trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, callbacks=[pruning],
        ...                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(ImageClassifier(LeNet5()), DigitsDataModule(resize=32))
        >>> {name: len(idx) for name, idx in pruning.pruned_filters.items()}
        {'model.features.0': 2, 'model.features.3': 2}
    """

    def __init__(
        self,
        auditor: GMMFilterAuditor | None = None,
        anomaly_sets: dict[str, list[int]] | None = None,
        criterion: Literal["anomaly", "l1", "apoz", "random", "low_ch"] = "anomaly",
        epochs: int | list[int] | Callable[[int], bool] = 1,
        amount: int | float | None = None,
        max_fraction: float = 0.5,
        layers: list[str] | None = None,
        ignored_layers: list[str] | None = None,
        mode: Literal["mask", "physical"] = "mask",
        seed: int = 0,
        apoz_samples: int = 256,
    ) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"`criterion` must be one of {list(CRITERIA)}, got {criterion!r}.")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {list(MODES)}, got {mode!r}.")
        if auditor is not None and not isinstance(auditor, GMMFilterAuditor):
            raise ValueError(f"`auditor` must be a GMMFilterAuditor or None, got {type(auditor).__name__}.")
        if anomaly_sets is not None and (
            not isinstance(anomaly_sets, dict)
            or not all(
                isinstance(v, (list, tuple)) and all(isinstance(i, int) for i in v)
                for v in anomaly_sets.values()
            )
        ):
            raise ValueError(
                f"`anomaly_sets` must be a dict {{layer: [filter indices]}}, got {anomaly_sets!r}."
            )
        if callable(epochs):
            self._schedule: Callable[[int], bool] = epochs
        else:
            ep = [epochs] if isinstance(epochs, int) and not isinstance(epochs, bool) else epochs
            if (
                not isinstance(ep, (list, tuple))
                or not ep
                or any(not isinstance(e, int) or isinstance(e, bool) or e < 0 for e in ep)
            ):
                raise ValueError(
                    f"`epochs` must be a non-negative int, a list of them or a callable, got {epochs!r}."
                )
            wanted = set(ep)
            self._schedule = wanted.__contains__
        if amount is not None:
            ok_int = isinstance(amount, int) and not isinstance(amount, bool) and amount >= 1
            ok_frac = isinstance(amount, float) and 0.0 < amount < 1.0
            if not (ok_int or ok_frac):
                raise ValueError(f"`amount` must be None, an int >= 1 or a float in (0, 1), got {amount!r}.")
        if not isinstance(max_fraction, (int, float)) or not 0.0 < max_fraction < 1.0:
            raise ValueError(f"`max_fraction` must be in (0, 1), got {max_fraction!r}.")
        for name, value in (("layers", layers), ("ignored_layers", ignored_layers)):
            if value is not None and (
                not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value)
            ):
                raise ValueError(f"`{name}` must be None or a list of module names, got {value!r}.")
        if not isinstance(apoz_samples, int) or apoz_samples < 1:
            raise ValueError(f"`apoz_samples` must be a positive integer, got {apoz_samples!r}.")
        if mode == "physical":
            from lightning_addons._imports import require

            require("torch_pruning", feature="AnomalyFilterPruning(mode='physical')")
        self.auditor, self.anomaly_sets = auditor, anomaly_sets
        self.criterion, self.amount, self.max_fraction = criterion, amount, float(max_fraction)
        self.layers, self.ignored_layers = layers, list(ignored_layers or [])
        self.mode, self.seed, self.apoz_samples = mode, seed, apoz_samples
        self.masks: dict[str, torch.Tensor] = {}  # layer -> bool [C], True = kept
        self.events: list[dict[str, Any]] = []
        self.reductions: dict[str, float] = {}
        self._layer_names: list[str] = []
        self._last_epoch = -1
        self._load_hook: Any = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(criterion=self.criterion, layers=self.layers, mode=self.mode)

    # ------------------------------------------------------------------ public views
    @property
    def pruned_filters(self) -> dict[str, list[int]]:
        """``{layer: [pruned filter indices]}`` (mask mode; in physical mode the indices of each event)."""
        if self.mode == "physical":
            out: dict[str, list[int]] = {}
            for ev in self.events:
                for layer, idx in ev["pruned"].items():
                    out.setdefault(layer, []).extend(idx)
            return out
        return {n: (~m).nonzero().flatten().tolist() for n, m in self.masks.items() if bool((~m).any())}

    # ------------------------------------------------------------------ setup
    def _resolve_auditor(self, trainer: pl.Trainer | None) -> None:
        if self.auditor is None and trainer is not None:
            found = [cb for cb in trainer.callbacks if isinstance(cb, GMMFilterAuditor)]
            self.auditor = found[0] if found else None
        needs_audit = self.criterion in ("anomaly", "low_ch") or self.amount is None
        if needs_audit and self.auditor is None and (self.anomaly_sets is None or self.criterion == "low_ch"):
            if self.criterion in ("anomaly", "low_ch"):
                what = f"criterion={self.criterion!r}"
            else:
                what = "amount=None (as many as the anomaly set)"
            raise ValueError(
                f"AnomalyFilterPruning with {what} needs a GMMFilterAuditor: pass `auditor=...` or add one to "
                "the Trainer's callbacks"
                + ("" if self.criterion == "low_ch" else ", or give `anomaly_sets`")
                + (
                    ""
                    if self.criterion in ("anomaly", "low_ch")
                    else ", or set `amount` (an int or a fraction)"
                )
                + "."
            )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve_auditor(trainer)
        named = dict(pl_module.named_modules())
        convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
        if self.layers is not None:
            wanted = list(self.layers)
        elif self.auditor is not None and self.auditor.layers is not None:
            wanted = list(self.auditor.layers)
        else:
            wanted = convs
        for arg, names in (("layers", wanted), ("ignored_layers", self.ignored_layers)):
            bad = [n for n in names if not isinstance(named.get(n), nn.Conv2d)]
            if bad:
                raise ValueError(
                    f"`{arg}` names {bad} that are not nn.Conv2d modules of the model; conv layers: {convs[:20]}."
                )
        self._layer_names = [n for n in wanted if n not in self.ignored_layers]
        if not self._layer_names:
            raise ValueError(
                "AnomalyFilterPruning has no layer to prune: check `layers` and `ignored_layers`."
            )
        if trainer is not None and self.auditor is not None and self.auditor not in trainer.callbacks:
            raise ValueError(
                "`auditor` must also be one of the Trainer's callbacks (it audits during the fit)."
            )
        if self.mode == "mask" and self._load_hook is None:
            # masks are the model's state: re-create them from any state dict loaded into the model (a resume,
            # `trainer.test(ckpt_path=...)`) before its keys are matched, so the strict load succeeds
            self._load_hook = pl_module.register_load_state_dict_pre_hook(self._attach_from_state_dict)

    def _attach_from_state_dict(
        self, module: nn.Module, state: dict[str, torch.Tensor], prefix: str, *_: Any
    ) -> None:
        """Re-create the ``torch.nn.utils.prune`` masks found in ``state`` on ``module``."""
        modules = dict(module.named_modules())
        for key, mask in state.items():
            if not key.startswith(prefix) or not key.endswith("_mask"):
                continue
            base = key[len(prefix) : -len("_mask")]
            if prefix + base + "_orig" not in state:
                continue
            owner, _, pname = base.rpartition(".")
            target = modules.get(owner)
            if target is None or hasattr(target, pname + "_orig") or getattr(target, pname, None) is None:
                continue
            prune.custom_from_mask(target, pname, mask.to(getattr(target, pname).device))
            if pname == "weight" and isinstance(target, nn.Conv2d):
                self.masks[owner] = mask.flatten(1).any(1).cpu()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._load_hook is not None:
            self._load_hook.remove()
            self._load_hook = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "mask":  # masks from an older (folded) checkpoint's callback state: re-attach them
            modules = dict(pl_module.named_modules())
            for name, keep in self.masks.items():
                if name in modules and not hasattr(modules[name], "weight_orig"):
                    self._apply_mask(pl_module, name, keep)

    # ------------------------------------------------------------------ criteria
    def _audit_rows(self, layer: str) -> list[dict[str, Any]]:
        latest = self.auditor.latest if self.auditor is not None else None
        return [r for r in (latest or {}).get("filters", []) if r["layer"] == layer]

    def _anomaly_set(self, layer: str) -> list[int]:
        if self.anomaly_sets is not None:
            return list(self.anomaly_sets.get(layer, []))
        return self.auditor.anomaly_sets().get(layer, []) if self.auditor is not None else []

    def _apoz(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        x = self.auditor.audit_inputs() if self.auditor is not None else None
        if x is None:  # a sequential pass over the first samples: never advances the training loader's RNG
            from torch.utils.data import DataLoader

            loader = DataLoader(trainer.train_dataloader.dataset, batch_size=256, shuffle=False)
            parts, n = [], 0
            for batch in loader:
                xb = batch[0] if isinstance(batch, (list, tuple)) else batch
                parts.append(xb)
                n += len(xb)
                if n >= self.apoz_samples:
                    break
            x = torch.cat(parts)[: self.apoz_samples]
        targets = {name: following_batchnorm(pl_module, name) or name for name in self._layer_names}
        zeros: dict[str, torch.Tensor] = {}

        def hook_for(layer):
            def hook(_m, _i, out):
                frac = (out <= 0).float().mean(dim=(0, 2, 3)).cpu()
                zeros[layer] = zeros.get(layer, 0) + frac * len(out)

            return hook

        hooks: dict[str, Any] = {}
        for layer, t in targets.items():
            hooks.setdefault(t, hook_for(layer))
        run_with_hooks(pl_module, hooks, (x[s : s + 256] for s in range(0, len(x), 256)), pl_module.device)
        return {k: v / len(x) for k, v in zeros.items()}

    def _ranking(self, trainer, pl_module, layer: str, conv: nn.Conv2d, epoch: int, apoz) -> list[int]:
        c = conv.out_channels
        if self.criterion == "anomaly":
            return self._anomaly_set(layer)
        if self.criterion == "l1":
            return torch.argsort(conv.weight.detach().abs().flatten(1).sum(1).cpu(), stable=True).tolist()
        if self.criterion == "apoz":
            return torch.argsort(apoz[layer], descending=True, stable=True).tolist()
        if self.criterion == "random":
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch * 7919 + sum(map(ord, layer)))
            return torch.randperm(c, generator=g).tolist()
        rows = self._audit_rows(layer)  # low_ch
        ch = torch.tensor([r["ch"] for r in sorted(rows, key=lambda r: r["filter"])], dtype=torch.float64)
        return torch.argsort(ch, stable=True).tolist() if len(ch) == c else []

    def _count(self, layer: str, c: int) -> int:
        if self.amount is None:
            return len(self._anomaly_set(layer))
        if isinstance(self.amount, float):
            return int(round(self.amount * c))
        return self.amount

    def decide(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, list[int]]:
        """The filters to prune now, per layer (respecting the cap and earlier pruning)."""
        modules = dict(pl_module.named_modules())
        counts: dict[str, int] = {}
        for layer in self._layer_names:
            c = modules[layer].out_channels
            keep = self.masks.get(layer, torch.ones(c, dtype=torch.bool))
            cap = min(int(self.max_fraction * c), c - 1)
            n = min(self._count(layer, c), cap - int((~keep).sum()))
            if n > 0:
                counts[layer] = n
        apoz = self._apoz(trainer, pl_module) if self.criterion == "apoz" and counts else None
        decision: dict[str, list[int]] = {}
        for layer, n in counts.items():
            conv = modules[layer]
            c = conv.out_channels
            keep = self.masks.get(layer, torch.ones(c, dtype=torch.bool))
            order = [
                i
                for i in self._ranking(trainer, pl_module, layer, conv, epoch, apoz)
                if 0 <= i < c and bool(keep[i])
            ]
            if order[:n]:
                decision[layer] = sorted(order[:n])
        return decision

    # ------------------------------------------------------------------ mechanism
    def _apply_mask(self, pl_module: pl.LightningModule, layer: str, keep: torch.Tensor) -> None:
        modules = dict(pl_module.named_modules())
        targets = [modules[layer]]
        bn = following_batchnorm(pl_module, layer)
        if bn is not None:
            targets.append(modules[bn])
        for module in targets:
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is None:
                    continue
                if hasattr(module, pname + "_orig"):
                    prune.remove(module, pname)
                param = getattr(module, pname)
                mask = (
                    keep.to(param.device)
                    .view(-1, *([1] * (param.dim() - 1)))
                    .expand_as(param)
                    .to(param.dtype)
                )
                prune.custom_from_mask(module, pname, mask)

    def _prune_physical(self, trainer, pl_module, decision: dict[str, list[int]]) -> None:
        from lightning_addons._imports import require

        tp = require("torch_pruning", feature="AnomalyFilterPruning(mode='physical')")
        x = self._example(trainer, pl_module)
        ops0, params0 = tp.utils.count_ops_and_params(pl_module, x)
        graph = tp.DependencyGraph().build_dependency(pl_module, example_inputs=x)
        modules = dict(pl_module.named_modules())
        for layer, idx in decision.items():
            group = graph.get_pruning_group(modules[layer], tp.prune_conv_out_channels, idxs=idx)
            if graph.check_pruning_group(group):
                group.prune()
        ops1, params1 = tp.utils.count_ops_and_params(pl_module, x)
        trainer.strategy.setup_optimizers(trainer)
        self.reductions = {
            "params_before": float(params0),
            "params_after": float(params1),
            "flops_before": float(ops0),
            "flops_after": float(ops1),
            "params_reduction": 1.0 - params1 / params0,
            "flops_reduction": 1.0 - ops1 / ops0,
        }

    def _example(self, trainer, pl_module) -> torch.Tensor:
        x = self.auditor.audit_inputs() if self.auditor is not None else None
        if x is None:
            batch = next(iter(trainer.train_dataloader))
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return x[:2].to(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch == self._last_epoch or not self._schedule(epoch):
            return
        self._last_epoch = epoch
        uses_audit = self.criterion == "low_ch" or (
            self.anomaly_sets is None and (self.criterion == "anomaly" or self.amount is None)
        )
        if uses_audit and self.auditor is not None:
            latest = self.auditor.latest
            if latest is None or latest["epoch"] < epoch - 1:  # stale or none: audit now, whatever the budget
                self.auditor.run_audit(trainer, pl_module, reason="pruning")
        elif uses_audit:
            warnings.warn(
                f"AnomalyFilterPruning: no GMM auditor at epoch {epoch}; nothing pruned.", stacklevel=2
            )
            return
        decision = self.decide(trainer, pl_module, epoch)
        if trainer.world_size > 1:  # decide once on rank 0, every rank applies the same masks
            decision = trainer.strategy.broadcast(decision, src=0)
        self.events.append({"epoch": epoch, "criterion": self.criterion, "pruned": decision})
        if not decision:
            return
        if self.mode == "physical":
            self._prune_physical(trainer, pl_module, decision)
        else:
            modules = dict(pl_module.named_modules())
            for layer, idx in decision.items():
                keep = self.masks.get(
                    layer, torch.ones(modules[layer].out_channels, dtype=torch.bool)
                ).clone()
                keep[idx] = False
                self.masks[layer] = keep
                self._apply_mask(pl_module, layer, keep)
        total = sum(len(v) for v in decision.values())
        rank_zero_info(
            f"AnomalyFilterPruning ({self.criterion}) epoch {epoch}: pruned {total} filters {decision}"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pruned = sum(len(v) for v in self.pruned_filters.values())
        values = {"prune/pruned_filters": float(pruned)}
        if self.mode == "physical" and self.reductions:
            values["prune/params_reduction"] = self.reductions["params_reduction"]
            values["prune/flops_reduction"] = self.reductions["flops_reduction"]
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)

    # ------------------------------------------------------------------ checkpoints
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # fold the masks in: after fit the model is a plain model with zero filters; checkpoints written during
        # the fit keep the masks (the model's prune state), a later fit or test with this callback re-attaches them
        if self.mode == "mask":
            self.make_permanent(pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "mask":
            self.make_permanent(pl_module)

    def make_permanent(self, module: nn.Module) -> None:
        """Fold the masks into the weights (``prune.remove``) so ``module`` is a plain model again."""
        for m in module.modules():
            for pname in ("weight", "bias"):
                if hasattr(m, pname + "_orig"):
                    prune.remove(m, pname)

    def state_dict(self) -> dict[str, Any]:
        return seal(
            {
                "version": 1,
                "masks": {k: v.clone() for k, v in self.masks.items()},
                "events": self.events,
                "last_epoch": self._last_epoch,
                "reductions": dict(self.reductions),
            }
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = unseal(state_dict, type(self).__name__)  # a damaged checkpoint is an error, never loaded
        self.masks = {k: v.clone().bool() for k, v in state_dict.get("masks", {}).items()}
        self.events = list(state_dict.get("events", []))
        self._last_epoch = int(state_dict.get("last_epoch", -1))
        self.reductions = dict(state_dict.get("reductions", {}))
