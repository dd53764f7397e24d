"""GMMFilterAuditor: audit every filter of a CNN during training by Gaussian-mixture clustering of its feature
maps (arXiv 2412.10457), flag anomaly filters and the samples they isolate."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_addons._validate import integer_at_least as _positive_int
from lightning_addons.gmm.audit import BACKENDS, CRITERIA, LayerAudit, audit_layers, validate_components
from lightning_addons.gmm.rules import RULE_PARAMS, RULES

FIGURES = ("end", "every", "none")
AUDIT_DEVICES = ("auto", "cpu")
FILTER_FIELDS = ("epoch", "layer", "filter", "k", "ch", "min_fraction", "dead", "anomaly", "score", "n_flagged")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class GMMFilterAuditor(pl.Callback):
    """Audit conv filters by clustering their feature maps with Gaussian mixtures, during training.

    At validation-epoch end (every ``every_n_epochs`` from epoch ``warmup_epochs``; at train-epoch end when
    there is no validation), the model runs in eval mode on a fixed seeded subset of the training set with
    forward hooks that exist only during the audit. For every filter of the audited layers, the ``N`` feature
    maps are flattened, projected to 2-D by PCA, and clustered by Gaussian mixtures with ``K`` from
    ``components``; ``K`` is chosen by the largest Calinski-Harabasz (CH) index (or smallest BIC). Filters
    with a constant map are ``dead`` (never anomalies); the anomaly ``rule`` decides which filters isolate
    outlier samples. Samples flagged by at least ``min_votes`` anomaly filters are the audit's outliers; their
    ids are dataset indices (the third batch element of ``(x, y, idx)`` datasets, else the position in the
    training dataset).

    Logged: ``gmm/anomaly_filters``, ``gmm/anomaly_filters/<layer>``, ``gmm/mean_ch``,
    ``gmm/mean_ch/<layer>``, ``gmm/outlier_samples``, ``gmm/dead_filters``, ``gmm/audit_seconds``,
    ``gmm/overhead`` (audit seconds so far / training seconds so far; see ``max_overhead``).
    Written under ``save_dir`` (default ``<trainer.log_dir>/gmm_audit``): ``audit_epoch<E>.json`` and
    ``.csv`` per audit, and PNG figures per layer (PCA scatter with mixture ellipses of the most anomalous
    filter, CH heat map across audits). ``auditor.history`` (list of dicts), ``auditor.latest``,
    ``auditor.history_frame()`` (pandas) and ``auditor.outlier_indices`` give the results to code.

    Args:
        layers: module names (as in ``pl_module.named_modules()``) to audit; ``None`` audits every ``nn.Conv2d``.
        max_samples: size of the audited subset of the training set (``None``: the whole set).
        components: candidate numbers of mixture components (integers >= 2).
        every_n_epochs: audit cadence in epochs.
        warmup_epochs: first epoch (0-based) that is audited.
        max_overhead: bound on the audits' share of training time: a due audit is skipped (and listed in
            ``auditor.skipped_epochs``) when the audits so far plus the last audit's duration would exceed
            ``max_overhead`` times the training time so far (the fit's wall time without the audits). The
            first due audit always runs. Rank 0 decides and broadcasts. ``None`` audits at every due epoch
            whatever it costs (e.g. to track anomaly filters every epoch on a small dataset, where one audit
            of 512 samples can cost more than a training epoch).
        criterion: ``"ch"`` (largest CH index) or ``"bic"`` (smallest BIC) to choose ``K``.
        rule: anomaly rule: ``"likelihood"`` (default), ``"small_component"`` or ``"ch_outlier"``
            (see :mod:`lightning_addons.gmm.rules`).
        rule_kwargs: parameters of the rule (e.g. ``{"z_threshold": 8.0, "min_fraction": 0.02}``).
        min_votes: a sample is an outlier when at least this many anomaly filters flag it.
        backend: ``"torch"`` (batched EM over all filters of a layer) or ``"sklearn"`` (reference loop under
            ``threadpool_limits(1)``).
        batch_size: batch size of the audit forward pass.
        seed: seed of the subset and of the fits (same seed, same weights -> same verdicts).
        save_dir: folder of the tables and figures (``None``: ``<trainer.log_dir>/gmm_audit``).
        save_tables: write JSON/CSV per audit.
        figures: ``"end"`` (after fit), ``"every"`` (after each audit) or ``"none"``.
        n_jobs: joblib worker processes for the scikit-learn backend's per-filter fits (``-1``: all cores).
        audit_device: where the captured maps are kept and the torch backend fits: ``"auto"`` (the model's
            device: a GPU model is audited on the GPU) or ``"cpu"`` (saves GPU memory: the maps of every
            audited layer for ``max_samples`` samples are held at once, e.g. 512 x 64 x 112 x 112 floats =
            1.6 GB for a ResNet stem at 224 px). The scikit-learn backend always fits on the CPU.

    Raises:
        ValueError: bad arguments (at construction); at setup: no ``nn.Conv2d`` in the model, unknown layer
            names, a training set smaller than ``max_samples``, non-image samples or layer outputs.

    Example:
        >>> import lightning.pytorch as pl
        >>> from lightning_addons.datamodules import DigitsDataModule
        >>> from lightning_addons.modules import ImageClassifier
        >>> from lightning_addons.modules.nn import LeNet5
        >>> auditor = GMMFilterAuditor(max_samples=128, figures="none", save_tables=False)
        >>> trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[auditor],
        ...                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(ImageClassifier(LeNet5()), DigitsDataModule(resize=32))
        >>> sorted(auditor.latest["layers"])
        ['model.features.0', 'model.features.3']
    """

    def __init__(
        self,
        layers: list[str] | None = None,
        max_samples: int | None = 512,
        components: list[int] = [2, 3, 4],  # noqa: B006 - a YAML-friendly default, never mutated
        every_n_epochs: int = 1,
        warmup_epochs: int = 0,
        max_overhead: float | None = 0.05,
        criterion: Literal["ch", "bic"] = "ch",
        rule: Literal["likelihood", "small_component", "ch_outlier"] | Callable = "likelihood",
        rule_kwargs: dict[str, float] | None = None,
        min_votes: int = 1,
        backend: Literal["torch", "sklearn"] = "torch",
        batch_size: int = 256,
        seed: int = 0,
        save_dir: str | None = None,
        save_tables: bool = True,
        figures: Literal["end", "every", "none"] = "end",
        n_jobs: int = 1,
        audit_device: Literal["auto", "cpu"] = "auto",
    ) -> None:
        super().__init__()
        if layers is not None and (
            not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers)
        ):
            raise ValueError(f"`layers` must be None (every nn.Conv2d) or a non-empty list of module names, got {layers!r}.")
        if max_samples is not None:
            _positive_int("max_samples", max_samples, minimum=8)
        self.components = validate_components(components, max_samples)
        _positive_int("every_n_epochs", every_n_epochs)
        _positive_int("warmup_epochs", warmup_epochs, minimum=0)
        if max_overhead is not None and (
            isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float)) or not 0 < max_overhead
            or not math.isfinite(max_overhead)
        ):
            raise ValueError(
                f"`max_overhead` must be a positive fraction of training time (e.g. 0.05) or None (no bound), "
                f"got {max_overhead!r}."
            )
        self.max_overhead = None if max_overhead is None else float(max_overhead)
        _positive_int("min_votes", min_votes)
        _positive_int("batch_size", batch_size)
        if criterion not in CRITERIA:
            raise ValueError(f"`criterion` must be one of {list(CRITERIA)}, got {criterion!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
        if not callable(rule) and rule not in RULES:
            raise ValueError(f"`rule` must be one of {list(RULES)} or a callable, got {rule!r}.")
        if rule_kwargs is not None:
            if not isinstance(rule_kwargs, dict):
                raise ValueError(f"`rule_kwargs` must be a dict or None, got {rule_kwargs!r}.")
            if not callable(rule):
                unknown = sorted(set(rule_kwargs) - set(RULE_PARAMS[rule]))
                if unknown:
                    raise ValueError(
                        f"`rule_kwargs` has keys {unknown} that rule {rule!r} does not take; allowed: {list(RULE_PARAMS[rule])}."
                    )
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0 or n_jobs < -1:
            raise ValueError(f"`n_jobs` must be a positive integer or -1 (all cores), got {n_jobs!r}.")
        self.n_jobs = n_jobs
        if audit_device not in AUDIT_DEVICES:
            raise ValueError(f"`audit_device` must be one of {list(AUDIT_DEVICES)}, got {audit_device!r}.")
        self.audit_device = audit_device
        if figures not in FIGURES:
            raise ValueError(f"`figures` must be one of {list(FIGURES)}, got {figures!r}.")
        self.layers = list(layers) if layers is not None else None
        self.max_samples = max_samples
        self.every_n_epochs, self.warmup_epochs = every_n_epochs, warmup_epochs
        self.criterion, self.rule, self.rule_kwargs = criterion, rule, dict(rule_kwargs or {})
        self.min_votes, self.backend, self.batch_size, self.seed = min_votes, backend, batch_size, seed
        self.save_dir, self.save_tables, self.figures = save_dir, save_tables, figures
        self.history: list[dict[str, Any]] = []
        self._layer_names: list[str] = []
        self._x: torch.Tensor | None = None
        self._subset: torch.Tensor | None = None
        self._sample_ids: torch.Tensor | None = None
        self._out_dir: Path | None = None
        self._last_epoch = -1
        self._considered_epoch = -1
        self.skipped_epochs: list[int] = []
        self._audit_seconds = 0.0  # audits' wall time, this fit and resumed ones
        self._fit_seconds_before = 0.0  # fit wall time of earlier (resumed-from) runs
        self._fit_start: float | None = None
        self._plot_data: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several auditors (e.g. two rules) can share a Trainer and a checkpoint."""
        rule = self.rule if isinstance(self.rule, str) else getattr(self.rule, "__name__", "custom")
        return self._generate_state_key(
            layers=self.layers, rule=rule, rule_kwargs=sorted(self.rule_kwargs.items()), criterion=self.criterion,
            max_samples=self.max_samples, seed=self.seed,
        )

    # ------------------------------------------------------------------ results
    @property
    def latest(self) -> dict[str, Any] | None:
        """The last audit (a dict of primitives), or ``None`` before the first audit."""
        return self.history[-1] if self.history else None

    @property
    def outlier_indices(self) -> list[int]:
        """Dataset indices of the samples the last audit flagged."""
        return list(self.latest["outlier_ids"]) if self.latest else []

    def anomaly_sets(self) -> dict[str, list[int]]:
        """``{layer: [filter indices]}`` of the last audit's anomaly filters (sorted by decreasing score)."""
        out: dict[str, list[tuple[float, int]]] = {}
        for row in (self.latest or {}).get("filters", []):
            if row["anomaly"]:
                out.setdefault(row["layer"], []).append((-row["score"], row["filter"]))
        return {layer: [f for _, f in sorted(v)] for layer, v in out.items()}

    def history_frame(self):
        """All audits' per-filter rows as a pandas DataFrame (columns ``FILTER_FIELDS`` + ``flagged_ids``)."""
        import pandas as pd

        rows = [row for audit in self.history for row in audit["filters"]]
        return pd.DataFrame(rows, columns=[*FILTER_FIELDS, "flagged_ids"])

    # ------------------------------------------------------------------ setup
    def resolve_layers(self, module: nn.Module) -> list[str]:
        """Names of the audited modules of ``module`` (raises a ``ValueError`` naming the fix)."""
        named = dict(module.named_modules())
        convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
        if self.layers is None:
            if not convs:
                raise ValueError(
                    "GMMFilterAuditor found no nn.Conv2d in the model: pass `layers=[...]` with the names of "
                    "modules that output [N, C, H, W] feature maps."
                )
            return convs
        unknown = [n for n in self.layers if n not in named]
        if unknown:
            hint = convs[:20] if convs else list(named)[:20]
            raise ValueError(f"`layers` names unknown modules {unknown}; conv layers of this model: {hint}.")
        return list(self.layers)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._layer_names = self.resolve_layers(pl_module)
        if self.save_dir is not None:
            self._out_dir = Path(self.save_dir)
        else:
            log_dir = trainer.log_dir  # a collective under DDP: every rank calls it
            self._out_dir = Path(log_dir or trainer.default_root_dir) / "gmm_audit"

    def _prepare_subset(self, trainer: pl.Trainer) -> None:
        if self._x is not None:
            return
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                "GMMFilterAuditor needs one training DataLoader over a map-style dataset (with __len__ and "
                f"__getitem__), got {type(loader).__name__}."
            )
        n = len(dataset)
        size = n if self.max_samples is None else self.max_samples
        if size > n:
            raise ValueError(
                f"`max_samples`={self.max_samples} is larger than the training dataset ({n} samples): "
                f"set max_samples <= {n} (or None for the whole set)."
            )
        validate_components(self.components, size)
        if self._subset is None or len(self._subset) != size or int(self._subset.max()) >= n:
            g = torch.Generator().manual_seed(self.seed)
            self._subset = torch.randperm(n, generator=g)[:size].sort().values
        xs, ids = [], []
        for i in self._subset.tolist():
            item = dataset[i]
            x = item[0] if isinstance(item, (tuple, list)) else item
            x = torch.as_tensor(x)
            if x.dim() != 3:
                raise ValueError(
                    "GMMFilterAuditor needs image samples of shape [C, H, W] (batches [N, C, H, W]); the training "
                    f"dataset gives samples of shape {tuple(x.shape)}."
                )
            xs.append(x)
            idx = item[2] if isinstance(item, (tuple, list)) and len(item) >= 3 else i
            ids.append(int(idx) if not torch.is_tensor(idx) or idx.numel() == 1 else i)
        self._x = torch.stack(xs).float()
        self._sample_ids = torch.tensor(ids, dtype=torch.long)

    # ------------------------------------------------------------------ schedule
    def _due(self, trainer: pl.Trainer) -> bool:
        e = trainer.current_epoch
        return (
            not trainer.sanity_checking
            and e >= self.warmup_epochs
            and (e - self.warmup_epochs) % self.every_n_epochs == 0
            and e != self._last_epoch
            and e != self._considered_epoch
        )

    def _fit_seconds(self) -> float:
        now = time.perf_counter()
        return self._fit_seconds_before + (now - self._fit_start if self._fit_start is not None else 0.0)

    def _train_seconds(self) -> float:
        return self._fit_seconds() - self._audit_seconds

    def overhead(self) -> float:
        """Audits' share of training time so far (audit seconds / fit seconds without the audits)."""
        train = self._train_seconds()
        return self._audit_seconds / train if train > 0 else 0.0

    def _within_budget(self, trainer: pl.Trainer) -> bool:
        """Whether the due audit fits in ``max_overhead`` (decided on rank 0, broadcast to every rank)."""
        if self.max_overhead is None:
            return True
        run = True
        if trainer.global_rank == 0 and self.history:
            next_cost = float(self.history[-1].get("seconds", 0.0))
            run = self._audit_seconds + next_cost <= self.max_overhead * self._train_seconds()
        if trainer.world_size > 1:
            run = bool(trainer.strategy.broadcast(run, src=0))
        return run

    def _maybe_audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._considered_epoch = trainer.current_epoch
        if self._within_budget(trainer):
            self.run_audit(trainer, pl_module)
            return
        if not self.skipped_epochs:
            rank_zero_info(
                f"GMMFilterAuditor: skipping the audit of epoch {trainer.current_epoch} to keep audits under "
                f"max_overhead={self.max_overhead:g} of training time (audits {self._audit_seconds:.2f}s so far, "
                f"last {self.history[-1]['seconds']:.2f}s, training {self._train_seconds():.2f}s); "
                "set max_overhead=None to audit at every due epoch, or raise it."
            )
        self.skipped_epochs.append(trainer.current_epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_seconds_before, self._fit_start = self._fit_seconds(), None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._due(trainer):
            self._maybe_audit(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer):  # no validation ran this epoch
            self._maybe_audit(trainer, pl_module)

    # ------------------------------------------------------------------ audit
    @torch.no_grad()
    def _capture(self, pl_module: pl.LightningModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
        modules = dict(pl_module.named_modules())
        # each layer's maps go straight into a [C, N, H, W] buffer: per-filter matrices without a later transpose
        store: dict[str, torch.Tensor] = {}
        offset = {"start": 0}

        def hook_for(name: str):
            def hook(_module, _inp, out):
                if not torch.is_tensor(out) or out.dim() != 4:
                    shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                    raise ValueError(
                        f"`layers` entry {name!r} outputs {shape}, not [N, C, H, W] feature maps: audit nn.Conv2d "
                        "layers (or modules with 4-D outputs) on image batches."
                    )
                out = out.detach()
                if name not in store:
                    # on the model's device: the torch backend fits there (a GPU audits on the GPU)
                    store[name] = torch.empty(out.shape[1], len(x), *out.shape[2:], dtype=torch.float32,
                                              device=out.device if self.audit_device == "auto" else "cpu")
                start = offset["start"]
                store[name][:, start : start + len(out)] = out.transpose(0, 1)

            return hook

        modes = {m: m.training for m in pl_module.modules()}
        handles = [modules[name].register_forward_hook(hook_for(name)) for name in self._layer_names]
        try:
            pl_module.eval()
            for start in range(0, len(x), self.batch_size):
                offset["start"] = start
                pl_module(x[start : start + self.batch_size].to(pl_module.device))
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        return {name: store[name].transpose(0, 1) if name in store else torch.zeros(0) for name in self._layer_names}

    def _gather(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        assert self._x is not None
        world, rank = trainer.world_size, trainer.global_rank
        if world == 1:
            return self._capture(pl_module, self._x)
        chunks = torch.tensor_split(torch.arange(len(self._x)), world)
        per = math.ceil(len(self._x) / world)
        mine = self._capture(pl_module, self._x[chunks[rank]])
        out = {}
        for name, maps in mine.items():
            padded = maps.new_zeros(per, *maps.shape[1:])
            padded[: len(maps)] = maps
            gathered = trainer.strategy.all_gather(padded.to(pl_module.device))  # [world, per, ...]
            if self.audit_device == "cpu":
                gathered = gathered.cpu()
            out[name] = torch.cat([gathered[r, : len(chunks[r])] for r in range(world)])
        return out

    def audit_maps(self, maps: dict[str, torch.Tensor], epoch: int = 0, step: int = 0) -> dict[str, Any]:
        """Audit captured feature maps ``{layer: [N, C, H, W]}`` (usable without a Trainer; sample ids are the
        subset's dataset indices once the auditor ran in a Trainer, else ``0..N-1``)."""
        if not maps:
            raise ValueError("`maps` must hold at least one layer's feature maps.")
        n = next(iter(maps.values())).shape[0]
        ids = self._sample_ids if self._sample_ids is not None and len(self._sample_ids) == n else torch.arange(n)
        audits: dict[str, LayerAudit] = audit_layers(
            maps, self.components, self.criterion, self.rule, self.rule_kwargs, self.backend, self.seed, self.n_jobs
        )
        votes = sum((a.flagged & a.anomaly[:, None]).sum(0) for a in audits.values())
        outliers = (votes >= self.min_votes).nonzero().flatten()
        filters, layers = [], {}
        for name, a in audits.items():
            live = ~a.dead
            layers[name] = {
                "anomaly_filters": int(a.anomaly.sum()),
                "dead_filters": int(a.dead.sum()),
                "mean_ch": float(a.ch[live].mean()) if bool(live.any()) else 0.0,
            }
            for f in range(len(a.k)):
                flagged = a.flagged[f].nonzero().flatten() if bool(a.anomaly[f]) else torch.zeros(0, dtype=torch.long)
                filters.append({
                    "epoch": epoch, "layer": name, "filter": f, "k": int(a.k[f]), "ch": float(a.ch[f]),
                    "min_fraction": float(a.min_fraction[f]), "dead": bool(a.dead[f]),
                    "anomaly": bool(a.anomaly[f]), "score": float(a.score[f]), "n_flagged": len(flagged),
                    "flagged_ids": ids[flagged].tolist(),
                })
            top = int(torch.where(a.dead, torch.full_like(a.score, -torch.inf), a.score).argmax()) if len(a.k) else 0
            if len(a.k) and not bool(a.dead[top]):
                self._plot_data[name] = {
                    "filter": top, "points": a.points[top].float(), "weights": a.weights[top],
                    "means": a.means[top], "covariances": a.covariances[top],
                    "flagged": a.flagged[top] & a.anomaly[top], "epoch": epoch,
                }
        live_ch = [r["ch"] for r in filters if not r["dead"]]
        return {
            "epoch": epoch,
            "step": step,
            "n_samples": int(len(ids)),
            "layers": layers,
            "anomaly_filters": sum(v["anomaly_filters"] for v in layers.values()),
            "dead_filters": sum(v["dead_filters"] for v in layers.values()),
            "mean_ch": float(sum(live_ch) / len(live_ch)) if live_ch else 0.0,
            "outlier_samples": int(len(outliers)),
            "outlier_ids": ids[outliers].tolist(),
            "outlier_votes": votes[outliers].tolist(),
            "filters": filters,
        }

    def run_audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Run one audit now (all ranks call it; rank 0 fits and broadcasts the verdicts)."""
        self._last_epoch = trainer.current_epoch
        start = time.perf_counter()
        self._prepare_subset(trainer)
        maps = self._gather(trainer, pl_module)
        result = None
        if trainer.global_rank == 0:
            result = self.audit_maps(maps, trainer.current_epoch, trainer.global_step)
        if trainer.world_size > 1:
            result = trainer.strategy.broadcast(result, src=0)
        local = time.perf_counter() - start
        self._audit_seconds += local
        # rank 0's clock for every rank, so that histories are identical
        seconds, overhead = trainer.strategy.broadcast((local, self.overhead()), src=0)
        self._audit_seconds += float(seconds) - local
        result["seconds"], result["overhead"] = float(seconds), float(overhead)
        self.history.append(result)
        self._log(pl_module, result)
        if trainer.is_global_zero:
            self._write(trainer, result)
            if self.figures == "every":
                self.save_figures()
            rank_zero_info(
                f"GMM audit epoch {result['epoch']}: {result['anomaly_filters']} anomaly filters, "
                f"{result['outlier_samples']} flagged samples, {result['seconds']:.2f}s"
            )
        return result

    def _log(self, pl_module: pl.LightningModule, r: dict[str, Any]) -> None:
        values = {
            "gmm/anomaly_filters": r["anomaly_filters"],
            "gmm/dead_filters": r["dead_filters"],
            "gmm/mean_ch": r["mean_ch"],
            "gmm/outlier_samples": r["outlier_samples"],
            "gmm/audit_seconds": r["seconds"],
            "gmm/overhead": r.get("overhead", 0.0),
        }
        for name, v in r["layers"].items():
            values[f"gmm/anomaly_filters/{name}"] = v["anomaly_filters"]
            values[f"gmm/mean_ch/{name}"] = v["mean_ch"]
        # identical on every rank (broadcast), so no reduction is needed
        pl_module.log_dict({k: float(v) for k, v in values.items()}, on_step=False, on_epoch=True, sync_dist=False)

    # ------------------------------------------------------------------ outputs
    def _write(self, trainer: pl.Trainer, r: dict[str, Any]) -> None:
        if self.save_tables and self._out_dir is not None:
            stem = self._out_dir / f"audit_epoch{r['epoch']:03d}"
            _atomic_write(stem.with_suffix(".json"), json.dumps(r, indent=1))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=[*FILTER_FIELDS, "flagged_ids"])
            writer.writeheader()
            for row in r["filters"]:
                writer.writerow({**row, "flagged_ids": " ".join(map(str, row["flagged_ids"]))})
            _atomic_write(stem.with_suffix(".csv"), buf.getvalue())
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger  # classes only: no wandb import

        for logger in trainer.loggers:
            rows = [row for row in r["filters"] if row["anomaly"]]
            if isinstance(logger, TensorBoardLogger):
                lines = ["| layer | filter | k | ch | score | n_flagged |", "|---|---|---|---|---|---|"]
                lines += [f"| {x['layer']} | {x['filter']} | {x['k']} | {x['ch']:.1f} | {x['score']:.3f} | {x['n_flagged']} |" for x in rows]
                logger.experiment.add_text("gmm/anomaly_filters", "\n".join(lines), r["step"])
            elif isinstance(logger, WandbLogger):
                cols = [c for c in FILTER_FIELDS]
                logger.log_table(key="gmm/audit", columns=cols, data=[[x[c] for c in cols] for x in r["filters"]])

    def save_figures(self, out_dir: str | os.PathLike | None = None) -> list[Path]:
        """Save one PNG per layer: PCA scatter (with mixture ellipses) of the layer's most anomalous filter in
        the last audit, and the CH heat map (filters x audits). Returns the paths written."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Ellipse

        folder = Path(out_dir) if out_dir is not None else (self._out_dir or Path("gmm_audit"))
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        epochs = [a["epoch"] for a in self.history]
        for name in self._layer_names or list(self._plot_data):
            rows = [[row["ch"] for row in a["filters"] if row["layer"] == name] for a in self.history]
            if not rows or not rows[0]:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            pdata = self._plot_data.get(name)
            ax = axes[0]
            if pdata is not None:
                pts, fl = pdata["points"], pdata["flagged"]
                ax.scatter(pts[~fl, 0], pts[~fl, 1], s=6, c="tab:blue", label="samples")
                if bool(fl.any()):
                    ax.scatter(pts[fl, 0], pts[fl, 1], s=14, c="tab:red", marker="x", label="flagged")
                for mean, cov in zip(pdata["means"], pdata["covariances"]):
                    vals, vecs = torch.linalg.eigh(cov.double())
                    angle = math.degrees(math.atan2(float(vecs[1, 1]), float(vecs[0, 1])))
                    w, h = (2 * 2 * vals.clamp_min(0).sqrt()).tolist()[::-1]
                    ax.add_patch(Ellipse(mean.tolist(), w, h, angle=angle, fill=False, color="k", lw=1))
                ax.set_title(f"{name} filter {pdata['filter']} (epoch {pdata['epoch']}), 2-sigma ellipses")
                ax.legend(loc="best", fontsize=7)
            ax.set_xlabel("PC1")
            ax.set_ylabel("PC2")
            width = max(len(r) for r in rows)
            mat = torch.tensor([r + [0.0] * (width - len(r)) for r in rows]).T
            im = axes[1].imshow(mat.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
            axes[1].set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
            axes[1].set_xlabel("audit epoch")
            axes[1].set_ylabel("filter")
            axes[1].set_title("CH index")
            fig.colorbar(im, ax=axes[1])
            fig.tight_layout()
            path = folder / f"gmm_{name.replace('.', '_')}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
        return paths

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.figures != "none" and self.history and trainer.is_global_zero:
            self.save_figures()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "history": self.history,
            "last_epoch": self._last_epoch,
            "skipped_epochs": list(self.skipped_epochs),
            "audit_seconds": float(self._audit_seconds),
            "fit_seconds": float(self._fit_seconds()),
            "subset": self._subset.clone() if self._subset is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_epoch = int(state_dict.get("last_epoch", -1))
        self.skipped_epochs = [int(e) for e in state_dict.get("skipped_epochs", [])]
        self._audit_seconds = float(state_dict.get("audit_seconds", 0.0))
        self._fit_seconds_before, self._fit_start = float(state_dict.get("fit_seconds", 0.0)), None
        subset = state_dict.get("subset")
        self._subset = subset.clone() if torch.is_tensor(subset) else None
        self._x = None
