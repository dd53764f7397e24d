"""The CacheFL experiment on the embedded tiny world (part 1's CacheCLIPAdapter + tiny UNet cache set).

Per Dirichlet ``alpha`` and partition seed it reports test accuracy (alpha/beta of the cache always
searched on the server's *validation* split, best round chosen on validation) and bytes for:

* zero-shot CLIP and the training-free synthetic cache (no training; the same for every partition);
* CacheFL: FedAvg of the cache keys only (``N*K*C`` floats per client per direction);
* local-only: each client fine-tunes the cache alone for ``rounds * local_epochs`` epochs (mean over clients);
* centralised cache fine-tuning: one client holding the pooled private training data, same schedule;
* full-encoder FedAvg ("traditional"): the CLIP image tower fine-tuned and federated, zero-shot text head;
* ablation: CacheFL from a cache built from one client's skewed real data instead of the balanced
  synthetic set.

Run it with ``lightning-addons federate --config examples/configs/cachefl_digits.yaml`` (a config with a
``cachefl:`` section). An experiment driver: it calls the public API of the library only (moved here from
``lightning_addons.federated.cachefl``, which still re-exports it with a ``DeprecationWarning``).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from lightning_addons.data import atomic_write_text
from lightning_addons.datamodules import SyntheticCacheDataModule
from lightning_addons.federated import (
    ClientDataModule,
    FederatedSimulation,
    dirichlet_partition,
    local_only,
    quiet_lightning,
)
from lightning_addons.integrity import load_verified, save_verified
from lightning_addons.modules import CacheCLIPAdapter
from lightning_addons.strategies import get_federated_state, state_nbytes

log = logging.getLogger(__name__)


class TensorSplitsDataModule(pl.LightningDataModule):
    """Serves ``{"train"|"val"|"test": (x, y)}`` tensors (features or images) as loaders."""

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_size: int = 256) -> None:
        super().__init__()
        self.splits, self.batch_size = splits, batch_size

    def _loader(self, split: str) -> DataLoader:
        x, y = self.splits[split]
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


#: ``format`` of a file written by :func:`save_feature_world`.
FEATURE_WORLD_FORMAT = "lightning-addons/cachefl-feature-world/1"
_SPLITS = ("train", "val", "test")


def save_feature_world(
    path: str | Path, adapter: CacheCLIPAdapter, features: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> Path:
    """Write a CacheFL world on cached features: the initial cache model and the ``train/val/test`` features.

    The file (written atomically, with a sha256 of its content; tensors and primitives only) is what
    :func:`feature_world_adapter` and :class:`CachedFeaturesDataModule` read, so a YAML config of
    ``lightning-addons federate`` or of the Flower apps can name the same CacheFL model and data in every
    process (Flower's simulation engine builds them once per actor instead of running the generator).

    Raises:
        ValueError: an adapter without a cache, a missing split, features and labels of different lengths.

    Examples:
        >>> import tempfile, torch
        >>> adapter = CacheCLIPAdapter(class_names=["zero", "one"], search_alpha_beta=False)
        >>> adapter.set_cache(torch.nn.functional.normalize(torch.randn(4, 64), dim=-1), torch.tensor([0, 0, 1, 1]))
        >>> splits = {s: (torch.randn(6, 64), torch.tensor([0, 1] * 3)) for s in ("train", "val", "test")}
        >>> path = save_feature_world(tempfile.mkdtemp() + "/world.pt", adapter, splits)
        >>> tuple(feature_world_adapter(str(path)).cache_keys.shape)
        (4, 64)
        >>> len(CachedFeaturesDataModule(str(path)).train_dataloader().dataset)
        6
    """
    if not adapter.has_cache:
        raise ValueError(
            "`adapter` has no cache: build it (build_world / set_cache) before saving the world."
        )
    missing = [s for s in _SPLITS if s not in features]
    if missing:
        raise ValueError(f"`features` must hold the splits {list(_SPLITS)}, missing {missing}.")
    splits = {}
    for split in _SPLITS:
        x, y = features[split]
        if len(x) != len(y):
            raise ValueError(f"`features[{split!r}]` holds {len(x)} features but {len(y)} labels.")
        splits[split] = {
            "x": x.detach().float().contiguous().clone(),
            "y": y.detach().long().contiguous().clone(),
        }
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(adapter.hparams).items()}
    state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    world = {
        "format": FEATURE_WORLD_FORMAT,
        "adapter": {"hparams": hparams, "state": state},
        "splits": splits,
    }
    return save_verified(world, path)


def load_feature_world(path: str | Path) -> dict[str, Any]:
    """The content of a :func:`save_feature_world` file (digest checked, ``weights_only`` load).

    Raises:
        FileNotFoundError: no such file.
        IntegrityError: a truncated or corrupt file.
        ValueError: a file of another kind.
    """
    world = load_verified(path)
    if not isinstance(world, dict) or world.get("format") != FEATURE_WORLD_FORMAT:
        found = world.get("format") if isinstance(world, dict) else type(world).__name__
        raise ValueError(
            f"{str(path)!r} is not a CacheFL feature world (format {FEATURE_WORLD_FORMAT!r}), found {found!r}: "
            "write one with save_feature_world."
        )
    return world


def feature_world_adapter(path: str) -> CacheCLIPAdapter:
    """The initial cache model of a feature world file (for a YAML ``model: {class_path: ...}``).

    Examples: see :func:`save_feature_world`.
    """
    saved = load_feature_world(path)["adapter"]
    adapter = CacheCLIPAdapter(**saved["hparams"])
    adapter.load_state_dict(saved["state"])
    return adapter


class _LabelledTensorDataset(TensorDataset):
    """A ``(features, labels)`` TensorDataset exposing ``targets`` (partitioning reads labels without a loop)."""

    @property
    def targets(self) -> torch.Tensor:
        return self.tensors[1]


class CachedFeaturesDataModule(TensorSplitsDataModule):
    """The ``train/val/test`` features of a feature world file (see :func:`save_feature_world`) as loaders.

    Args:
        path: the world file.
        batch_size: batch size of the loaders (clients use ``federation.batch_size``).

    Examples: see :func:`save_feature_world`.
    """

    def __init__(self, path: str, batch_size: int = 256) -> None:
        splits = load_feature_world(path)["splits"]
        super().__init__({s: (v["x"], v["y"]) for s, v in splits.items()}, batch_size=batch_size)
        self.save_hyperparameters()
        self._datasets = {s: _LabelledTensorDataset(x, y) for s, (x, y) in self.splits.items()}

    def dataset(self, split: str) -> TensorDataset:
        """The split's dataset (one object per split, so client subsets share it).

        Raises:
            ValueError: a split other than train/val/test.
        """
        if split not in self._datasets:
            raise ValueError(f"`split` must be one of {list(_SPLITS)}, got {split!r}.")
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.batch_size)


class FullEncoderClassifier(pl.LightningModule):
    """The "traditional" baseline: fine-tune the whole CLIP image tower with the frozen zero-shot text head.

    ``logits = logit_scale * normalize(visual(preprocess(x))) @ W.T``; every visual parameter is trainable
    and therefore federated (the fallback contract).
    """

    def __init__(self, adapter: Any, lr: float = 1e-4, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.visual = copy.deepcopy(adapter.clip.visual).float().train()
        for p in self.visual.parameters():
            p.requires_grad_(True)
        self.register_buffer("text_weights", adapter.text_weights.detach().clone())
        self.register_buffer("logit_scale", adapter.logit_scale.detach().clone())
        self._preprocess = adapter.preprocess
        self.lr, self.weight_decay = lr, weight_decay
        n = adapter.num_classes
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.test_acc = MulticlassAccuracy(n, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.visual(self._preprocess(x)).float(), dim=-1)
        return self.logit_scale * f @ self.text_weights.T

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        return F.cross_entropy(self(x), y)

    def _eval(self, batch, stage):
        x, y = batch[0], batch[1]
        logits = self(x)
        metric = getattr(self, f"{stage}_acc")
        metric(logits, y)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log(f"{stage}_acc", metric, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.visual.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def client_datamodules(
    x: torch.Tensor, y: torch.Tensor, parts: Sequence[np.ndarray], batch_size: int, seed: int
) -> list[ClientDataModule]:
    """One :class:`~lightning_addons.federated.ClientDataModule` per index array of ``parts`` over ``(x, y)``."""
    ds = TensorDataset(x, y)
    return [
        ClientDataModule(Subset(ds, p.tolist()), batch_size=batch_size, client_id=k, seed=seed)
        for k, p in enumerate(parts)
    ]


def build_world(
    shots: int = 16, lr: float = 1e-3, seed: int = 0, fidelity_filter: bool = True, progress: bool = False
):
    """The initial cache model (balanced synthetic cache from the tiny UNet) and the private splits.

    Returns ``(adapter, features, images)`` where ``features``/``images`` map split -> ``(x, y)``.
    """
    torch.manual_seed(seed)
    adapter = CacheCLIPAdapter(lr=lr, search_alpha_beta=True, seed=seed)
    sdm = SyntheticCacheDataModule(
        generator="tiny-unet", shots=shots, fidelity_filter=fidelity_filter, seed=seed, progress=progress
    )
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        trainer.validate(adapter, datamodule=sdm, verbose=False)  # setup: encoder attached, cache built
    features = {s: sdm.split_features(s) for s in ("train", "val", "test")}
    images = {s: sdm.split_tensors(s) for s in ("train", "val", "test")}
    return adapter, features, images


#: The experiment's methods, in the order they run; ``methods=`` picks a subset (zero-shot and the
#: training-free cache cost nothing once the world is built and are always reported).
METHOD_NAMES = (
    "zero_shot",
    "training_free",
    "cachefl",
    "local_only",
    "centralised",
    "ablation",
    "full_encoder",
)
#: Row keys each method writes (the first is its accuracy); a row holds a method once all its keys are in.
METHOD_KEYS = {
    "cachefl": ("cachefl", "cachefl_best_round", "cachefl_bytes", "cachefl_bytes_per_client_round"),
    "local_only": ("local_only", "local_only_per_client"),
    "centralised": ("centralised",),
    "ablation": ("ablation_skewed_init", "ablation_skewed_training_free", "ablation_skewed_classes"),
    "full_encoder": ("full_encoder", "full_encoder_bytes"),
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: an interrupted run leaves the previous results file, never a torn one."""
    atomic_write_text(path, json.dumps(data, indent=2))


def run_cachefl(
    alphas: Sequence[float] = (0.1, 0.5),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    num_clients: int = 10,
    rounds: int = 20,
    local_epochs: int = 5,
    shots: int = 16,
    lr: float = 1e-3,
    batch_size: int = 32,
    min_size: int = 10,
    full_encoder: bool = True,
    full_encoder_seeds: int | None = None,
    full_encoder_lr: float = 1e-4,
    ablation: bool = True,
    out: str | Path | None = None,
    verbose: bool = True,
    methods: Sequence[str] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run the experiment; returns (and writes to ``out`` as JSON) per-alpha means, stds and per-seed rows.

    Args:
        methods: the methods to run (default all of :data:`METHOD_NAMES`; ``full_encoder=False`` or
            ``ablation=False`` also drop those two).
        out: results JSON, rewritten atomically after every finished method, so an interrupted run keeps
            what it finished (``"complete": false`` until the end).
        resume: with ``out`` from an earlier run of the same config, skip the (alpha, seed, method) units it
            finished; a results file of another config is an error naming the keys that differ.

    Raises:
        ValueError: empty ``alphas``/``seeds``, non-positive sizes, an unknown method, or an ``out`` file
            written by a different config (with ``resume=True``).
    """
    if not alphas or not seeds:
        raise ValueError(f"`alphas` and `seeds` must be non-empty, got {list(alphas)} and {list(seeds)}.")
    for name, v in (
        ("num_clients", num_clients),
        ("rounds", rounds),
        ("local_epochs", local_epochs),
        ("shots", shots),
    ):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
    chosen = list(METHOD_NAMES if methods is None else methods)
    unknown = [m for m in chosen if m not in METHOD_NAMES]
    if unknown or not chosen:
        raise ValueError(f"`methods` must be a non-empty list of {list(METHOD_NAMES)}, got {methods!r}.")
    run = {m for m in chosen if (m != "full_encoder" or full_encoder) and (m != "ablation" or ablation)}
    config = dict(
        alphas=list(alphas),
        seeds=list(seeds),
        num_clients=num_clients,
        rounds=rounds,
        local_epochs=local_epochs,
        shots=shots,
        lr=lr,
        batch_size=batch_size,
        min_size=min_size,
        full_encoder_lr=full_encoder_lr,
        full_encoder_seeds=full_encoder_seeds,
    )
    out_path = Path(out) if out is not None else None
    done_rows: dict[tuple[float, int], dict[str, Any]] = {}
    if out_path is not None and out_path.is_file() and resume:
        previous = json.loads(out_path.read_text())
        stored = previous.get("config", {})
        differ = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        if differ:
            raise ValueError(
                f"`out` {str(out_path)!r} holds results of another CacheFL config (differing keys: {differ}); "
                "give another `out`, or resume=False (`--cachefl.resume false`) to overwrite it."
            )
        done_rows = {(r["alpha"], r["seed"]): r for r in previous.get("rows", [])}
        if done_rows:
            log.warning(
                "CacheFL: resuming from %s (%d alpha/seed rows started); finished methods are skipped.",
                out_path,
                len(done_rows),
            )
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        if verbose:
            print(f"[cachefl {time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    say("building the world: synthetic cache from the tiny UNet, CLIP features of every split")
    adapter, feats, images = build_world(shots=shots, lr=lr, progress=verbose)
    eval_features = TensorSplitsDataModule(feats)
    cache_bytes = state_nbytes(get_federated_state(adapter))
    with quiet_lightning():
        base = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        ref = base.test(copy.deepcopy(adapter), datamodule=eval_features, verbose=False)[0]
    zero_shot, training_free = float(ref["test_acc_zero_shot"]), float(ref["test_acc_training_free"])
    say(
        f"world ready: cache {tuple(adapter.cache_keys.shape)} = {cache_bytes} B; zero-shot {zero_shot:.4f}, "
        f"training-free {training_free:.4f}"
    )
    x_tr, y_tr = feats["train"]
    sim_kwargs = dict(
        rounds=rounds, local_epochs=local_epochs, eval_datamodule=eval_features, progress_bar=verbose
    )
    rows: list[dict[str, Any]] = []

    def report(complete: bool) -> dict[str, Any]:
        return {
            "config": config,
            "methods": sorted(run, key=METHOD_NAMES.index),
            "complete": complete,
            "cache_shape": list(adapter.cache_keys.shape),
            "cache_bytes_per_transfer": cache_bytes,
            "seconds": time.perf_counter() - t_start,
            "summary": summarise(rows),
            "rows": rows,
        }

    def save() -> None:
        if out_path is not None:
            _write_json(out_path, report(complete=False))

    units = [(alpha, seed) for alpha in alphas for seed in seeds]
    for i, (alpha, seed) in enumerate(units):
        parts = dirichlet_partition(y_tr.numpy(), num_clients, alpha=alpha, min_size=min_size, seed=seed)
        clients = client_datamodules(x_tr, y_tr, parts, batch_size, seed)
        row: dict[str, Any] = dict(done_rows.get((alpha, seed), {}))
        row.update(
            alpha=alpha,
            seed=seed,
            zero_shot=zero_shot,
            training_free=training_free,
            client_sizes=[len(p) for p in parts],
        )
        rows.append(row)
        tag = f"[{i + 1}/{len(units)}] alpha={alpha} seed={seed}"

        def todo(method: str, row: dict[str, Any] = row, tag: str = tag) -> bool:
            if method not in run:
                return False
            if all(k in row for k in METHOD_KEYS[method]):
                say(f"{tag}: {method} already in {out_path} (resumed)")
                return False
            say(f"{tag}: {method} ...")
            return True

        if todo("cachefl"):
            res = FederatedSimulation(copy.deepcopy(adapter), clients, seed=seed, **sim_kwargs).fit()
            row["cachefl"] = res.test_metrics["test_acc"]
            row["cachefl_best_round"] = res.best_round
            row["cachefl_bytes"] = res.communication["bytes_total"]
            row["cachefl_bytes_per_client_round"] = res.communication["bytes_per_client_round"]
            say(f"{tag}: CacheFL {row['cachefl']:.4f} (best round {res.best_round})")
            save()
        if todo("local_only"):
            lo = local_only(
                copy.deepcopy(adapter),
                clients,
                epochs=rounds * local_epochs,
                eval_datamodule=eval_features,
                seed=seed,
                progress_bar=verbose,
            )
            row["local_only"] = lo["mean"]["test_acc"]
            row["local_only_per_client"] = [m["test_acc"] for m in lo["per_client"]]
            say(f"{tag}: local-only {row['local_only']:.4f}")
            save()
        if todo("centralised"):
            pooled = [
                ClientDataModule(TensorDataset(x_tr, y_tr), batch_size=batch_size, client_id=0, seed=seed)
            ]
            central = FederatedSimulation(copy.deepcopy(adapter), pooled, seed=seed, **sim_kwargs).fit()
            row["centralised"] = central.test_metrics["test_acc"]
            say(f"{tag}: centralised {row['centralised']:.4f}")
            save()
        if todo("ablation"):
            skew = copy.deepcopy(adapter)
            idx = parts[0]
            g = torch.Generator().manual_seed(seed)
            pick = torch.from_numpy(idx)[torch.randint(len(idx), (len(adapter.cache_labels),), generator=g)]
            skew.set_cache(x_tr[pick], y_tr[pick])
            with quiet_lightning():
                tf = pl.Trainer(
                    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
                ).test(skew, datamodule=eval_features, verbose=False)[0]
            abl = FederatedSimulation(skew, clients, seed=seed, **sim_kwargs).fit()
            row["ablation_skewed_init"] = abl.test_metrics["test_acc"]
            row["ablation_skewed_training_free"] = float(tf["test_acc_training_free"])
            row["ablation_skewed_classes"] = int(torch.unique(y_tr[pick]).numel())
            say(
                f"{tag}: ablation skewed-real init {row['ablation_skewed_init']:.4f} "
                f"({row['ablation_skewed_classes']} classes in the cache)"
            )
            save()
        n_full = full_encoder_seeds if full_encoder_seeds is not None else len(seeds)
        if list(seeds).index(seed) < n_full and todo("full_encoder"):
            xi, yi = images["train"]
            img_clients = client_datamodules(xi, yi, parts, batch_size, seed)
            torch.manual_seed(seed)
            full = FullEncoderClassifier(adapter, lr=full_encoder_lr)
            fres = FederatedSimulation(
                full,
                img_clients,
                seed=seed,
                rounds=rounds,
                local_epochs=local_epochs,
                eval_datamodule=TensorSplitsDataModule(images),
                progress_bar=verbose,
            ).fit()
            row["full_encoder"] = fres.test_metrics["test_acc"]
            row["full_encoder_bytes"] = fres.communication["bytes_total"]
            ratio = fres.communication["bytes_total"] / max(1.0, row.get("cachefl_bytes", 0.0))
            say(f"{tag}: full-encoder FedAvg {row['full_encoder']:.4f}, {ratio:.1f}x the bytes of CacheFL")
            save()
    final = report(complete=True)
    if out_path is not None:
        _write_json(out_path, final)
    if verbose:
        print(format_table(final))
    return final


METHODS = (
    ("zero_shot", "zero-shot CLIP"),
    ("training_free", "training-free synthetic cache"),
    ("cachefl", "CacheFL (cache keys FedAvg)"),
    ("local_only", "local-only (mean over clients)"),
    ("centralised", "centralised cache fine-tuning"),
    ("full_encoder", "full-encoder FedAvg"),
    ("ablation_skewed_init", "ablation: CacheFL, skewed real init"),
)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for alpha in sorted({r["alpha"] for r in rows}):
        sub = [r for r in rows if r["alpha"] == alpha]
        block: dict[str, dict[str, float]] = {}
        for key, _ in METHODS:
            vals = [r[key] for r in sub if key in r]
            if vals:
                block[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
        for key in ("cachefl_bytes", "full_encoder_bytes"):
            vals = [r[key] for r in sub if key in r]
            if vals:
                block[key] = {"mean": float(np.mean(vals)), "std": 0.0, "n": len(vals)}
        paired = [r for r in sub if "cachefl" in r and "local_only" in r]
        if paired:
            block["cachefl_beats_local_only_every_seed"] = {
                "mean": float(all(r["cachefl"] > r["local_only"] for r in paired)),
                "std": 0.0,
                "n": len(paired),
            }
        out[str(alpha)] = block
    return out


def format_table(report: dict[str, Any]) -> str:
    lines = []
    for alpha, block in report["summary"].items():
        lines.append(f"\nDirichlet alpha = {alpha}  (test accuracy, mean +/- std over seeds)")
        lines.append(f"{'method':40s} {'accuracy':>17s} {'bytes (total)':>15s}")
        for key, label in METHODS:
            if key not in block:
                continue
            b = block[key]
            bytes_key = {"cachefl": "cachefl_bytes", "full_encoder": "full_encoder_bytes"}.get(key)
            bytes_txt = (
                f"{block[bytes_key]['mean']:15,.0f}" if bytes_key and bytes_key in block else f"{'-':>15s}"
            )
            lines.append(f"{label:40s} {b['mean']:.4f} +/- {b['std']:.4f} (n={b['n']}) {bytes_txt}")
        if "full_encoder_bytes" in block and "cachefl_bytes" in block:
            ratio = block["full_encoder_bytes"]["mean"] / block["cachefl_bytes"]["mean"]
            lines.append(f"full-encoder FedAvg sends {ratio:.1f}x the bytes of CacheFL")
        if "cachefl_beats_local_only_every_seed" in block:
            ok = bool(block["cachefl_beats_local_only_every_seed"]["mean"])
            lines.append(f"CacheFL beats local-only on every seed: {ok}")
    lines.append(
        f"\ncache: {report['cache_shape']} float32 = {report['cache_bytes_per_transfer']} B per transfer; "
        f"{report['seconds']:.0f} s"
    )
    return "\n".join(lines)
