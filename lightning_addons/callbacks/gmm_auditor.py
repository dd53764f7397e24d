"""GMMFilterAuditor: audit every filter of a CNN during training by Gaussian-mixture clustering of its feature
maps (arXiv 2412.10457), flag anomaly filters and the samples they isolate."""

from __future__ import annotations

import fnmatch
import io
import math
import os
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import Subset

from lightning_addons._validate import integer_at_least as _positive_int
from lightning_addons.gmm import report
from lightning_addons.gmm.audit import (
    BACKENDS,
    CRITERIA,
    LayerAudit,
    audit_layers,
    sample_votes,
    validate_components,
)
from lightning_addons.gmm.capture import run_with_hooks
from lightning_addons.gmm.report import FILTER_FIELDS
from lightning_addons.gmm.rules import RULE_PARAMS, RULES
from lightning_addons.integrity import seal, unseal

FIGURES = ("end", "every", "none")
AUDIT_DEVICES = ("auto", "cpu")
SUBSETS = ("rotate", "fixed")
TYPE_PREFIX = "type:"
RETURN_KEY = "lightning_addons.gmm_auditor"  # key of the auditors' states in a spawn launcher's extra results

# auditors of this process by token: where a spawned worker's state is delivered (see `_ReturnedState`)
_LAUNCHING: weakref.WeakValueDictionary[str, GMMFilterAuditor] = weakref.WeakValueDictionary()


def _deliver(token: str, payload: bytes) -> str:
    """Runs in the launching process when a spawned rank 0's extra results are unpickled: loads the worker
    auditor's state into the auditor with that token (the object the user holds); returns the token."""
    auditor = _LAUNCHING.get(token)
    if auditor is not None:
        auditor._load_returned(payload)
    return token


class _ReturnedState:
    """An auditor's end-of-fit state on its way from a spawned rank 0 to the launching process: pickled by
    Lightning's return queue with the launcher's extra results, and delivered when unpickled there."""

    def __init__(self, token: str, payload: bytes) -> None:
        self.token, self.payload = token, payload

    def __reduce__(self):
        return _deliver, (self.token, self.payload)


def match_modules(module: nn.Module, patterns: list[str]) -> dict[str, list[str]]:
    """``{pattern: [module names]}``: each pattern is a module name as in ``module.named_modules()``, a glob
    over those names (``"model.layer*.?.conv2"``) or ``"type:ClassName"`` (every module whose class, or a
    base class, has that name, e.g. ``"type:BasicBlock"``, ``"type:Conv2d"``)."""
    named = [(n, m) for n, m in module.named_modules() if n]
    out = {}
    for pat in patterns:
        if pat.startswith(TYPE_PREFIX):
            cls = pat[len(TYPE_PREFIX) :]
            out[pat] = [n for n, m in named if any(c.__name__ == cls for c in type(m).__mro__)]
        elif any(ch in pat for ch in "*?["):
            out[pat] = [n for n, _ in named if fnmatch.fnmatchcase(n, pat)]
        else:
            out[pat] = [n for n, _ in named if n == pat]
    return out


def dataset_index(dataset: Any, position: int) -> tuple[Any, int]:
    """Map a position in ``dataset`` through any chain of ``torch.utils.data.Subset`` views to the index in
    the dataset at the bottom of the chain (the user's dataset); returns ``(that dataset, index)``."""
    while isinstance(dataset, Subset):
        position = int(dataset.indices[position])
        dataset = dataset.dataset
    return dataset, position


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
        layers: modules to audit: names as in ``pl_module.named_modules()``, glob patterns over the names
            (``"model.layer*.?"``) or ``"type:ClassName"`` (e.g. ``"type:BasicBlock"`` audits every ResNet block
            output); ``None`` audits every ``nn.Conv2d``. Each entry must match at least one module whose
            output is a 4-D ``[N, C, H, W]`` tensor.
        ignored_layers: entries (same forms) removed from the audited modules; each must match a module.
        max_samples: size of the audited subset of the training set (``None``: the whole set).
        subset: ``"rotate"`` (default): each audit takes the next ``max_samples`` samples of one seeded
            permutation of the training set, so successive audits cover every sample (``coverage`` in each
            audit); ``"fixed"``: the same seeded subset at every audit.
        components: candidate numbers of mixture components (integers >= 2).
        every_n_epochs: audit cadence in epochs.
        warmup_epochs: first epoch (0-based) that is audited.
        max_overhead: bound on the audits' share of training time (audit seconds / fit seconds without the
            audits). A due audit that would exceed it runs on fewer samples (as many as the budget affords at
            the last audit's cost per sample, at least ``min(max_samples, 64)``), else it is skipped (listed
            with its reason in ``auditor.skipped``); with ``subset="rotate"`` the smaller audits still move
            through the training set. The first due audit always runs; an audit requested by
            ``AnomalyFilterPruning`` at a pruning epoch always runs in full. Rank 0 decides and broadcasts.
            ``None`` audits every due epoch in full whatever it costs. A summary of audits run and skipped
            is logged at the end of ``fit`` (``auditor.summary()``).
        criterion: ``"ch"`` (largest CH index) or ``"bic"`` (smallest BIC) to choose ``K``.
        rule: anomaly rule: ``"consensus"`` (default: calibrated per layer, family-wise error ``alpha``),
            ``"likelihood"``, ``"small_component"`` or ``"ch_outlier"`` (see :mod:`lightning_addons.gmm.rules`),
            or a callable taking a ``RuleInput``.
        rule_kwargs: parameters of the rule (e.g. ``{"alpha": 0.01, "z_threshold": 8.0}``).
        min_votes: a sample is an outlier when at least this many anomaly filters flag it.
        backend: ``"torch"`` (batched EM over all filters of a layer) or ``"sklearn"`` (reference loop under
            ``threadpool_limits(1)``).
        batch_size: batch size of the audit forward pass (small batches keep the forward pass's transient
            activations small next to the captured maps).
        seed: seed of the subset and of the fits (same seed, same weights -> same verdicts).
        save_dir: folder of the tables and figures (``None``: ``<trainer.log_dir>/gmm_audit``, i.e. under the
            logger's directory or ``trainer.default_root_dir``); checked writable in ``setup``.
        save_tables: write JSON/CSV per audit.
        figures: ``"end"`` (after fit), ``"every"`` (after each audit) or ``"none"``.
        n_jobs: joblib worker processes for the scikit-learn backend's per-filter fits (``-1``: all cores).
        audit_device: where the captured maps are kept and the torch backend fits: ``"auto"`` (the model's
            device: a GPU model is audited on the GPU) or ``"cpu"`` (saves GPU memory: the maps of every
            audited layer for ``max_samples`` samples are held at once, e.g. 512 x 64 x 112 x 112 floats =
            1.6 GB for a ResNet stem at 224 px). The scikit-learn backend always fits on the CPU.

    Raises:
        ValueError: bad arguments (at construction); at setup: no ``nn.Conv2d`` in the model, a ``layers`` or
            ``ignored_layers`` entry matching no module, a ``save_dir`` that cannot be written; at the first
            audit: a training set smaller than ``max_samples``, non-image samples, a layer whose output is not
            ``[N, C, H, W]`` or that never runs in the forward pass.

    Under DDP each rank captures its shard of the subset, rank 0 fits and broadcasts the verdicts. After a
    spawn-launched fit (``strategy="ddp_spawn"``, ``ddp_fork``, ...) the auditor in the launching process holds
    rank 0's ``history``, ``skipped`` audits and coverage (sent back with the launcher's results), so
    ``outlier_indices`` and ``summary()`` work there as after a 1-process fit; ``audit_inputs()`` and figures
    stay with the workers (figures are written by rank 0).

    Layers whose maps cannot be audited (1x1 maps, rank-1 PCA panels in most filters), and with the
    ``consensus`` rule layers whose filters carry too few independent signals for any consensus (e.g. every
    filter following one per-sample activation level), are listed in one warning with the reason; dead
    (constant) filters and filters with rank-1 panels are reported as such (``dead`` /
    ``degenerate_filters``), never as anomalies.

    Examples:
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

    #: An audit is announced when it starts if it is the first one or the last one took longer than this
    #: (seconds); every audit is reported when it ends.
    announce_after_seconds: float = 5.0

    def __init__(
        self,
        layers: list[str] | None = None,
        max_samples: int | None = 512,
        ignored_layers: list[str] | None = None,
        subset: Literal["rotate", "fixed"] = "rotate",
        components: list[int] = [2, 3, 4],  # noqa: B006 - a YAML-friendly default, never mutated
        every_n_epochs: int = 1,
        warmup_epochs: int = 0,
        max_overhead: float | None = 0.05,
        criterion: Literal["ch", "bic"] = "ch",
        rule: Literal["consensus", "likelihood", "small_component", "ch_outlier"] | Callable = "consensus",
        rule_kwargs: dict[str, float] | None = None,
        min_votes: int = 1,
        backend: Literal["torch", "sklearn"] = "torch",
        batch_size: int = 64,
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
            raise ValueError(
                f"`layers` must be None (every nn.Conv2d) or a non-empty list of module names, got {layers!r}."
            )
        if ignored_layers is not None and (
            not isinstance(ignored_layers, (list, tuple))
            or not all(isinstance(n, str) for n in ignored_layers)
        ):
            raise ValueError(
                f"`ignored_layers` must be None or a list of module names/patterns, got {ignored_layers!r}."
            )
        if subset not in SUBSETS:
            raise ValueError(f"`subset` must be one of {list(SUBSETS)}, got {subset!r}.")
        if max_samples is not None:
            _positive_int("max_samples", max_samples, minimum=8)
        self.components = validate_components(components, max_samples)
        _positive_int("every_n_epochs", every_n_epochs)
        _positive_int("warmup_epochs", warmup_epochs, minimum=0)
        if max_overhead is not None and (
            isinstance(max_overhead, bool)
            or not isinstance(max_overhead, (int, float))
            or not 0 < max_overhead
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
        self.ignored_layers = list(ignored_layers or [])
        self.subset = subset
        self.max_samples = max_samples
        self.every_n_epochs, self.warmup_epochs = every_n_epochs, warmup_epochs
        self.criterion, self.rule, self.rule_kwargs = criterion, rule, dict(rule_kwargs or {})
        self.min_votes, self.backend, self.batch_size, self.seed = min_votes, backend, batch_size, seed
        self.save_dir, self.save_tables, self.figures = save_dir, save_tables, figures
        self.history: list[dict[str, Any]] = []
        self._layer_names: list[str] = []
        self._x: torch.Tensor | None = None
        self._subset: torch.Tensor | None = None  # positions in the training loader's dataset (this audit)
        self._sample_ids: torch.Tensor | None = None  # their ids in the user's dataset
        self._covered: torch.Tensor | None = None  # positions audited at least once
        self._windows = 0  # audits drawn so far (the rotation's cursor)
        self._out_dir: Path | None = None
        self._last_epoch = -1
        self._considered_epoch = -1
        self.skipped: list[dict[str, Any]] = []  # {"epoch", "reason"} per due audit that did not run
        self._warned_layers: dict[str, str] = {}
        self._audit_seconds = 0.0  # audits' wall time, this fit and resumed ones
        self._fit_seconds_before = 0.0  # fit wall time of earlier (resumed-from) runs
        self._fit_start: float | None = None
        self._plot_data: dict[str, dict[str, torch.Tensor]] = {}
        self._token = uuid.uuid4().hex  # names this auditor to its copies in spawned workers
        _LAUNCHING[self._token] = self

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several auditors (e.g. two rules) can share a Trainer and a checkpoint."""
        rule = self.rule if isinstance(self.rule, str) else getattr(self.rule, "__name__", "custom")
        return self._generate_state_key(
            layers=self.layers,
            rule=rule,
            rule_kwargs=sorted(self.rule_kwargs.items()),
            criterion=self.criterion,
            max_samples=self.max_samples,
            seed=self.seed,
        )

    # ------------------------------------------------------------------ results
    @property
    def latest(self) -> dict[str, Any] | None:
        """The last audit (a dict of primitives), or ``None`` before the first audit."""
        return self.history[-1] if self.history else None

    @property
    def outlier_indices(self) -> list[int]:
        """Indices in the user's dataset (through any ``Subset`` chain) of the samples the last audit flagged."""
        return list(self.latest["outlier_ids"]) if self.latest else []

    @property
    def audited_indices(self) -> list[int]:
        """Indices in the user's dataset of the samples the last audit examined."""
        return list(self.latest["sample_ids"]) if self.latest else []

    @property
    def coverage(self) -> float:
        """Share of the training set audited at least once so far."""
        return (
            float(self._covered.float().mean()) if self._covered is not None and len(self._covered) else 0.0
        )

    @property
    def skipped_epochs(self) -> list[int]:
        """Epochs whose due audit did not run (reasons in ``auditor.skipped``)."""
        return [int(s["epoch"]) for s in self.skipped]

    def audit_inputs(self) -> torch.Tensor | None:
        """The inputs ``[N, C, H, W]`` of the last audit (CPU), or ``None`` before the first one."""
        return self._x

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

    def summary(self) -> dict[str, Any]:
        """Audits run and skipped (with reasons), coverage, layers skipped as unauditable."""
        return {
            "audits": len(self.history),
            "audited_epochs": [a["epoch"] for a in self.history],
            "samples_per_audit": [a["n_samples"] for a in self.history],
            "skipped": [dict(s) for s in self.skipped],
            "coverage": self.coverage,
            "skipped_layers": dict(self._warned_layers),
            "audit_seconds": float(self._audit_seconds),
            "overhead": self.overhead(),
        }

    # ------------------------------------------------------------------ setup
    def resolve_layers(self, module: nn.Module) -> list[str]:
        """Names of the audited modules of ``module`` (raises a ``ValueError`` naming the argument and the fix)."""
        named = dict(module.named_modules())
        convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
        if self.layers is None:
            if not convs:
                raise ValueError(
                    "GMMFilterAuditor found no nn.Conv2d in the model: pass `layers=[...]` with the names of "
                    "modules that output [N, C, H, W] feature maps."
                )
            chosen = convs
        else:
            matches = match_modules(module, self.layers)
            unknown = [p for p, names in matches.items() if not names]
            if unknown:
                hint = convs[:20] if convs else [n for n in named if n][:20]
                raise ValueError(
                    f"`layers` entries {unknown} match no module of the model (entries are module names, glob "
                    f"patterns or 'type:ClassName'); conv layers of this model: {hint}."
                )
            chosen = list(dict.fromkeys(n for names in matches.values() for n in names))
        if self.ignored_layers:
            matches = match_modules(module, self.ignored_layers)
            unknown = [p for p, names in matches.items() if not names]
            if unknown:
                raise ValueError(
                    f"`ignored_layers` entries {unknown} match no module of the model; audited "
                    f"layers: {chosen[:20]}."
                )
            drop = {n for names in matches.values() for n in names}
            chosen = [n for n in chosen if n not in drop]
            if not chosen:
                raise ValueError("`ignored_layers` removes every audited layer: nothing left to audit.")
        return chosen

    def _resolve_out_dir(self, trainer: pl.Trainer) -> Path:
        if self.save_dir is not None:
            return Path(self.save_dir)
        log_dir = trainer.log_dir  # a collective under DDP: every rank calls it
        return Path(log_dir or trainer.default_root_dir) / "gmm_audit"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._layer_names = self.resolve_layers(pl_module)
        self._return_state_to_launcher(trainer)
        self._out_dir = self._resolve_out_dir(trainer)
        if (self.save_tables or self.figures != "none") and trainer.is_global_zero:
            self._check_writable(self._out_dir)

    def _check_writable(self, folder: Path) -> None:
        what = "`save_dir`" if self.save_dir is not None else "the default output folder (`save_dir=None`)"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_check"):
                pass
        except OSError as err:
            raise ValueError(
                f"GMMFilterAuditor cannot write to {what} {str(folder)!r} ({err.strerror or err}): pass a writable "
                "`save_dir`, or save_tables=False and figures='none' to write nothing."
            ) from err

    def _prepare_subset(self, trainer: pl.Trainer, size: int | None = None) -> None:
        """Draw this audit's samples: the next window of the seeded permutation (``subset="rotate"``) or the
        fixed subset; ``size`` (budget) may be smaller than ``max_samples``."""
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                "GMMFilterAuditor needs one training DataLoader over a map-style dataset (with __len__ and "
                f"__getitem__), got {type(loader).__name__}."
            )
        n = len(dataset)
        full = n if self.max_samples is None else self.max_samples
        if full > n:
            raise ValueError(
                f"`max_samples`={self.max_samples} is larger than the training dataset ({n} samples): "
                f"set max_samples <= {n} (or None for the whole set)."
            )
        size = full if size is None else min(size, full)
        validate_components(self.components, size)
        if self._covered is None or len(self._covered) != n:
            self._covered = torch.zeros(n, dtype=torch.bool)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        start = (self._windows * full) % n if self.subset == "rotate" else 0
        positions = perm[(start + torch.arange(size)) % n].sort().values
        self._windows += 1
        xs, ids = [], []
        for i in positions.tolist():
            item = dataset[i]
            x = item[0] if isinstance(item, (tuple, list)) else item
            x = torch.as_tensor(x)
            if x.dim() != 3:
                raise ValueError(
                    "GMMFilterAuditor needs image samples of shape [C, H, W] (batches [N, C, H, W]); the training "
                    f"dataset gives samples of shape {tuple(x.shape)}."
                )
            xs.append(x)
            idx = item[2] if isinstance(item, (tuple, list)) and len(item) >= 3 else None
            if idx is not None and (not torch.is_tensor(idx) or idx.numel() == 1):
                ids.append(int(idx))  # the dataset's own index (e.g. DigitsDataModule(return_indices=True))
            else:
                ids.append(dataset_index(dataset, i)[1])  # through Subset/random_split chains
        self._subset = positions
        self._covered[positions] = True
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

    def _full_size(self, trainer: pl.Trainer | None = None) -> int:
        if self.max_samples is not None:
            return self.max_samples
        dataset = getattr(getattr(trainer, "train_dataloader", None), "dataset", None)
        return len(dataset) if dataset is not None else 0

    def _planned_size(self, trainer: pl.Trainer) -> int:
        """Samples the due audit may use within ``max_overhead`` (0: skip); rank 0 decides, every rank follows."""
        full = self._full_size(trainer)
        if self.max_overhead is None or not self.history:
            return full
        size = full
        if trainer.global_rank == 0:
            last = self.history[-1]
            per_sample = float(last.get("seconds", 0.0)) / max(1, int(last.get("n_samples", full)))
            budget = self.max_overhead * self._train_seconds() - self._audit_seconds
            affordable = int(budget / per_sample) if per_sample > 0 else full
            floor = min(full, max(64, 4 * max(self.components)))
            size = full if affordable >= full else (affordable if affordable >= floor else 0)
        if trainer.world_size > 1:
            size = int(trainer.strategy.broadcast(size, src=0))
        return size

    def _within_budget(self, trainer: pl.Trainer) -> bool:
        """Whether the due audit can run within ``max_overhead`` (at full or reduced size)."""
        return self._planned_size(trainer) > 0

    def _maybe_audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._considered_epoch = trainer.current_epoch
        size = self._planned_size(trainer)
        if size > 0:
            self.run_audit(trainer, pl_module, size=size)
            return
        reason = (
            f"max_overhead={self.max_overhead:g}: audits {self._audit_seconds:.2f}s of "
            f"{self._train_seconds():.2f}s training leave no room for even a reduced audit"
        )
        if not self.skipped:
            rank_zero_info(
                f"GMMFilterAuditor: skipping the audit of epoch {trainer.current_epoch} ({reason}); set "
                "max_overhead=None to audit at every due epoch, or raise it."
            )
        self.skipped.append({"epoch": int(trainer.current_epoch), "reason": reason})

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
    def _capture(
        self, pl_module: nn.Module, x: torch.Tensor, device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
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
                    store[name] = torch.empty(
                        out.shape[1],
                        len(x),
                        *out.shape[2:],
                        dtype=torch.float32,
                        device=out.device if self.audit_device == "auto" else "cpu",
                    )
                start = offset["start"]
                store[name][:, start : start + len(out)] = out.transpose(0, 1)

            return hook

        def batches():
            for start in range(0, len(x), self.batch_size):
                offset["start"] = start
                yield x[start : start + self.batch_size]

        device = pl_module.device if device is None else device
        run_with_hooks(pl_module, {n: hook_for(n) for n in self._layer_names}, batches(), device)
        silent = [n for n in self._layer_names if n not in store]
        if silent:
            raise ValueError(
                f"`layers` entries {silent} produced no output in the audit's forward pass (modules that the "
                "model's forward never calls): audit modules on the forward path."
            )
        return {name: store[name].transpose(0, 1) for name in self._layer_names}

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

    def audit_maps(
        self, maps: dict[str, torch.Tensor], epoch: int = 0, step: int = 0, release_maps: bool = False
    ) -> dict[str, Any]:
        """Audit captured feature maps ``{layer: [N, C, H, W]}`` (usable without a Trainer; sample ids are the
        audited samples' dataset indices once the auditor ran in a Trainer, else ``0..N-1``).

        ``release_maps=True`` hands the maps over: each layer is popped from ``maps``, centred in place and
        freed once projected (see :func:`~lightning_addons.gmm.audit.audit_layers`), which bounds the
        audit's memory; the auditor's own capture does this."""
        if not maps:
            raise ValueError("`maps` must hold at least one layer's feature maps.")
        n = next(iter(maps.values())).shape[0]
        ids = (
            self._sample_ids
            if self._sample_ids is not None and len(self._sample_ids) == n
            else torch.arange(n)
        )
        audits: dict[str, LayerAudit] = audit_layers(
            maps,
            self.components,
            self.criterion,
            self.rule,
            self.rule_kwargs,
            self.backend,
            self.seed,
            self.n_jobs,
            release=release_maps,
        )
        votes = sample_votes(list(audits.values()))
        outliers = (votes >= self.min_votes).nonzero().flatten()
        filters, layers, skipped_layers = [], {}, {}
        for name, a in audits.items():
            degenerate = a.degenerate if a.degenerate is not None else torch.zeros_like(a.dead)
            live = ~a.dead & ~degenerate
            reason = a.skipped if a.skipped is not None else a.inconclusive
            if reason is not None:
                skipped_layers[name] = reason
            layers[name] = {
                "anomaly_filters": int(a.anomaly.sum()),
                "dead_filters": int(a.dead.sum()),
                "degenerate_filters": int(degenerate.sum()),
                "skipped": reason,
                "effective_filters": a.effective_filters,
                "mean_ch": float(a.ch[live].mean()) if bool(live.any()) else 0.0,
            }
            ks, chs, fracs = a.k.tolist(), a.ch.tolist(), a.min_fraction.tolist()
            deads, anomalies, scores = a.dead.tolist(), a.anomaly.tolist(), a.score.tolist()
            for f in range(len(ks)):  # plain lists: no per-element tensor access over thousands of filters
                flagged = ids[a.flagged[f]].tolist() if anomalies[f] else []
                filters.append(
                    {
                        "epoch": epoch,
                        "layer": name,
                        "filter": f,
                        "k": int(ks[f]),
                        "ch": float(chs[f]),
                        "min_fraction": float(fracs[f]),
                        "dead": bool(deads[f]),
                        "anomaly": bool(anomalies[f]),
                        "score": float(scores[f]),
                        "n_flagged": len(flagged),
                        "flagged_ids": flagged,
                    }
                )
            score = torch.where(live, a.score, torch.full_like(a.score, -torch.inf))
            top = int(score.argmax()) if len(a.k) else 0
            if len(a.k) and bool(live[top]):
                self._plot_data[name] = {
                    "filter": top,
                    "points": a.points[top].float(),
                    "weights": a.weights[top],
                    "means": a.means[top],
                    "covariances": a.covariances[top],
                    "flagged": a.flagged[top] & a.anomaly[top],
                    "epoch": epoch,
                }
        new = {k: v for k, v in skipped_layers.items() if self._warned_layers.get(k) != v}
        if new:
            self._warned_layers.update(new)
            listing = "; ".join(f"{k}: {v}" for k, v in new.items())
            rank_zero_warn(
                f"GMMFilterAuditor skips {len(new)} layer(s) whose maps cannot be audited (or whose filters cannot reach a consensus): {listing}."
            )
        live_ch = [r["ch"] for r in filters if not r["dead"] and r["k"] > 0]
        return {
            "epoch": epoch,
            "step": step,
            "n_samples": int(len(ids)),
            "sample_ids": ids.tolist(),
            "coverage": self.coverage,
            "layers": layers,
            "skipped_layers": skipped_layers,
            "anomaly_filters": sum(v["anomaly_filters"] for v in layers.values()),
            "dead_filters": sum(v["dead_filters"] for v in layers.values()),
            "degenerate_filters": sum(v["degenerate_filters"] for v in layers.values()),
            "mean_ch": float(sum(live_ch) / len(live_ch)) if live_ch else 0.0,
            "outlier_samples": int(len(outliers)),
            "outlier_ids": ids[outliers].tolist(),
            "outlier_votes": votes[outliers].tolist(),
            "filters": filters,
        }

    def audit_module(
        self,
        module: nn.Module,
        x: torch.Tensor,
        sample_ids: list[int] | torch.Tensor | None = None,
        epoch: int = 0,
    ) -> dict[str, Any]:
        """Audit ``module`` on inputs ``x`` ``[N, C, H, W]`` now, without a Trainer (e.g. a trained model, a
        benchmark): the same layers, capture and verdicts as in a fit; ids are ``sample_ids`` (default
        ``0..N-1``). Nothing is appended to ``history``.

        Raises:
            ValueError: as in ``setup`` (layer selection) and the audit (maps, ``sample_ids`` length).
        """
        self._layer_names = self.resolve_layers(module)
        ids = torch.arange(len(x)) if sample_ids is None else torch.as_tensor(sample_ids, dtype=torch.long)
        if len(ids) != len(x):
            raise ValueError(f"`sample_ids` must have one id per sample ({len(x)}), got {len(ids)}.")
        self._sample_ids = ids
        device = next(module.parameters(), torch.zeros(0)).device
        return self.audit_maps(self._capture(module, x, device), epoch, release_maps=True)

    def run_audit(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        size: int | None = None,
        reason: str = "scheduled",
    ) -> dict[str, Any]:
        """Run one audit now on ``size`` samples (default ``max_samples``); every rank calls it, rank 0 fits and
        broadcasts the verdicts. ``reason`` is recorded in the audit (e.g. ``"pruning"``)."""
        self._last_epoch = trainer.current_epoch
        last = self.history[-1] if self.history else None
        if last is None or float(last.get("seconds", 0.0)) > self.announce_after_seconds:
            took = f" (the last audit took {float(last['seconds']):.1f}s)" if last is not None else ""
            rank_zero_info(
                f"GMM audit epoch {trainer.current_epoch} ({reason}): started on "
                f"{size or self.max_samples or 'all'} samples{took}"
            )
        start = time.perf_counter()
        self._prepare_subset(trainer, size)
        maps = self._gather(trainer, pl_module)
        result = None
        if trainer.global_rank == 0:
            result = self.audit_maps(maps, trainer.current_epoch, trainer.global_step, release_maps=True)
        del maps
        if trainer.world_size > 1:
            result = trainer.strategy.broadcast(result, src=0)
        local = time.perf_counter() - start
        self._audit_seconds += local
        # rank 0's clock for every rank, so that histories are identical
        seconds, overhead = trainer.strategy.broadcast((local, self.overhead()), src=0)
        self._audit_seconds += float(seconds) - local
        result["seconds"], result["overhead"], result["reason"] = float(seconds), float(overhead), reason
        self.history.append(result)
        self._log(pl_module, result)
        if trainer.is_global_zero:
            self._write(trainer, result)
            if self.figures == "every":
                self.save_figures()
            rank_zero_info(
                f"GMM audit epoch {result['epoch']} ({reason}): {result['n_samples']} samples, "
                f"{result['anomaly_filters']} anomaly filters, {result['outlier_samples']} flagged samples, "
                f"coverage {result['coverage']:.0%}, {result['seconds']:.2f}s"
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
            "gmm/coverage": r.get("coverage", 0.0),
        }
        for name, v in r["layers"].items():
            values[f"gmm/anomaly_filters/{name}"] = v["anomaly_filters"]
            values[f"gmm/mean_ch/{name}"] = v["mean_ch"]
        # identical on every rank (broadcast): a "mean" reduction returns the same value, so sync_dist=True is
        # exact and keeps Lightning's DDP checks quiet
        pl_module.log_dict(
            {k: float(v) for k, v in values.items()}, on_step=False, on_epoch=True, sync_dist=True
        )

    # ------------------------------------------------------------------ outputs
    def _write(self, trainer: pl.Trainer, r: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        if self.save_tables and self._out_dir is not None:
            stem = self._out_dir / f"audit_epoch{r['epoch']:03d}"
            report.atomic_write(stem.with_suffix(".json"), report.audit_json(r))
            report.atomic_write(stem.with_suffix(".csv"), report.audit_csv(r))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("gmm/anomaly_filters", report.anomaly_markdown(r), r["step"])
            elif isinstance(logger, WandbLogger):
                cols, rows = report.table_rows(r)
                logger.log_table(key="gmm/audit", columns=cols, data=rows)

    def save_figures(self, out_dir: str | os.PathLike | None = None) -> list[Path]:
        """Save one PNG per layer: PCA scatter (with mixture ellipses) of the layer's most anomalous filter in
        the last audit, and the CH heat map (filters x audits). Returns the paths written.

        Raises:
            ValueError: no ``out_dir`` and the auditor has not been set up by a Trainer (no output folder)."""
        folder = Path(out_dir) if out_dir is not None else self._out_dir
        if folder is None:
            raise ValueError(
                "`out_dir` is required before the auditor has run in a Trainer (no output folder yet)."
            )
        return report.save_figures(self.history, self._plot_data, self._layer_names, folder)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.figures != "none" and self.history and trainer.is_global_zero:
            self.save_figures()
        s = self.summary()
        skipped = ", ".join(f"epoch {x['epoch']} ({x['reason']})" for x in s["skipped"]) or "none"
        layers = "; ".join(f"{k}: {v}" for k, v in s["skipped_layers"].items()) or "none"
        rank_zero_info(
            f"GMMFilterAuditor summary: {s['audits']} audit(s) at epochs {s['audited_epochs']} "
            f"(samples {s['samples_per_audit']}), {len(s['skipped'])} skipped: {skipped}; coverage "
            f"{s['coverage']:.0%} of the training set; layers not audited: {layers}; audits took "
            f"{s['audit_seconds']:.2f}s ({s['overhead']:.1%} of training)."
        )

    # ------------------------------------------------------------------ spawned workers
    def _return_state_to_launcher(self, trainer: pl.Trainer) -> None:
        """Under a spawn/fork launcher (``ddp_spawn``, ``ddp_fork``, ...) this process is a worker with a copy
        of the auditor: add its end-of-run state to the extra results that Lightning's launcher sends from rank
        0 back to the launching process (``get_extra_results``), where unpickling hands it to the user's
        auditor, so ``history``, ``outlier_indices``, ``skipped`` and ``summary()`` there equal the workers'."""
        launcher = getattr(trainer.strategy, "launcher", None)
        get_extra = getattr(launcher, "get_extra_results", None)
        if get_extra is None or not hasattr(launcher, "update_main_process_results"):
            return  # no launcher (one process), or one whose processes all run the user's script
        if self._token in getattr(launcher, "_gmm_auditor_tokens", ()):
            return
        launcher._gmm_auditor_tokens = (*getattr(launcher, "_gmm_auditor_tokens", ()), self._token)

        def get_extra_results(trainer: pl.Trainer) -> dict[str, Any]:
            extra = get_extra(trainer)  # Lightning's own (callback_metrics), then ours: called on rank 0 only
            extra.setdefault(RETURN_KEY, []).append(_ReturnedState(self._token, self._returned_payload()))
            return extra

        launcher.get_extra_results = get_extra_results

    def _returned_payload(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "state": self.state_dict(),
                "layers": list(self._layer_names),
                "warned_layers": dict(self._warned_layers),
                "out_dir": str(self._out_dir) if self._out_dir is not None else None,
            },
            buffer,
        )
        return buffer.getvalue()

    def _load_returned(self, payload: bytes) -> None:
        data = torch.load(io.BytesIO(payload), weights_only=True)
        self.load_state_dict(data["state"])
        self._layer_names = list(data["layers"])
        self._warned_layers = dict(data["warned_layers"])
        self._out_dir = Path(data["out_dir"]) if data["out_dir"] is not None else None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return seal(
            {
                "version": 2,
                "history": self.history,
                "last_epoch": self._last_epoch,
                "skipped": [dict(x) for x in self.skipped],
                "skipped_epochs": self.skipped_epochs,
                "audit_seconds": float(self._audit_seconds),
                "fit_seconds": float(self._fit_seconds()),
                "subset": self._subset.clone() if self._subset is not None else None,
                "covered": self._covered.clone() if self._covered is not None else None,
                "windows": int(self._windows),
            }
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = unseal(state_dict, type(self).__name__)  # a damaged checkpoint is an error, never loaded
        self.history = list(state_dict.get("history", []))
        self._last_epoch = int(state_dict.get("last_epoch", -1))
        skipped = state_dict.get("skipped")
        if skipped is None:  # version 1: epochs only
            skipped = [
                {"epoch": int(e), "reason": "max_overhead"} for e in state_dict.get("skipped_epochs", [])
            ]
        self.skipped = [dict(x) for x in skipped]
        self._audit_seconds = float(state_dict.get("audit_seconds", 0.0))
        self._fit_seconds_before, self._fit_start = float(state_dict.get("fit_seconds", 0.0)), None
        subset = state_dict.get("subset")
        self._subset = subset.clone() if torch.is_tensor(subset) else None
        covered = state_dict.get("covered")
        self._covered = covered.clone().bool() if torch.is_tensor(covered) else None
        self._windows = int(state_dict.get("windows", len(self.history)))
        self._x = None
