"""CacheCLIPAdapter: a Tip-Adapter(-F) cache model on a frozen open_clip CLIP, the unit CacheFL trains and federates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_addons.integrity import CheckpointDigestMixin
from lightning_addons.modules.clip_backbone import (  # noqa: F401  (re-exported: their old home)
    TINY_WORLD_TAG,
    clip_preprocess,
    load_clip,
    validate_clip_reference,
)
from lightning_addons.modules.nn.cache import (
    CacheSetSource,
    EncoderClient,
    resolve_templates,
    search_alpha_beta,
    tip_adapter_logits,
    validate_class_names,
)

DEFAULT_ALPHA_GRID = [round(0.25 * i, 4) for i in range(0, 81)]  # 0 .. 20
DEFAULT_BETA_GRID = [round(0.5 * i, 4) for i in range(1, 25)]  # 0.5 .. 12


class CacheCLIPAdapter(CheckpointDigestMixin, pl.LightningModule):
    """Tip-Adapter(-F) cache model on a frozen open_clip CLIP; only the cache keys train (CacheFL).

    ``logits = logit_scale * f @ W.T + alpha * exp(-beta * (1 - f @ keys.T)) @ values`` where ``f`` are
    L2-normalised CLIP image features, ``W`` the normalised mean of the prompt-template text embeddings
    per class, ``keys`` the normalised features of the cache images (``N`` classes x ``K`` shots,
    averaged over ``augment_views`` augmented views) and ``values`` their one-hot labels (a buffer:
    bit-identical forever). Training-free mode uses the cache as built; with ``train_keys`` the keys
    are fine-tuned with AdamW and a cosine schedule.

    The CLIP model is frozen and kept *outside* the module's parameters and state dict: checkpoints
    and federated updates hold only the cache. Batches are ``(x, y)`` or ``(x, y, index)`` where ``x``
    is either images ``[B, C, H, W]`` (intensities in [0, 1], resized/normalised here) or precomputed
    features ``[B, D]``; :class:`~lightning_addons.datamodules.SyntheticCacheDataModule` encodes every
    split once and serves features, so epochs cost milliseconds. The cache is built in ``setup`` from
    the datamodule's class-balanced cache set (or by :meth:`build_cache`).

    alpha/beta: the values given are used for training; with ``search_alpha_beta`` a grid search on the
    *validation* loader (never test) picks them for the training-free cache at fit start and for the
    fine-tuned cache at fit end (or before validate/test when no search was done for the current keys).
    ``test`` logs ``test_acc`` (current cache), ``test_acc_zero_shot``, ``test_acc_training_free``
    (and ``*_top5`` for more than 5 classes) and prints an accuracy table.

    Args:
        class_names: distinct class names (default: the ten digit names of the embedded world).
        clip_model: an open_clip model name (``"ViT-B-32"``, the embedded ``"tiny-digits-clip"``),
            ``"local-dir:PATH"``, ``"hf-hub:ORG/REPO"`` or a factory ``"package.module:function"``
            returning ``(model, tokenizer)``.
        pretrained: an open_clip tag (``"laion2b_s34b_b79k"``; ``"lightning-addons"`` for the tiny world),
            a local checkpoint path, or ``None`` for random weights (tests).
        templates: ``"digits"``, ``"simple"`` (``"a photo of a {}."``), ``"imagenet7"`` (the 7-template
            ImageNet ensemble) or a list of templates with one ``{}`` each.
        alpha, beta: residual ratio and sharpness of the cache.
        train_keys: fine-tune the keys (Tip-Adapter-F); ``False`` keeps the cache training-free.
        train_alpha_beta: also learn alpha and beta (then they are federated too).
        lr, weight_decay, eps: AdamW settings; ``scheduler`` ``"cosine"`` (over ``max_epochs``) or ``"none"``.
        search_alpha_beta: run the validation grid search (see above) over ``alpha_grid`` x ``beta_grid``.
        augment_views: views averaged per cache image (view 0 is the image itself, the others random
            resized crops); 10 as in Tip-Adapter's cache construction.
        encode_batch_size: batch size when running the frozen encoder.
        seed: seed of the augmented views.

    Raises:
        ValueError: empty/duplicate class names, unknown template set, unknown open_clip name (close
            matches listed) or tag, non-positive lr, bad grids, ``augment_views < 1``.
        FileNotFoundError: a checkpoint path or ``local-dir:`` folder that does not exist.
        ModuleNotFoundError: open_clip is missing (names the ``clip`` extra).

    Examples:
        >>> import torch
        >>> module = CacheCLIPAdapter(class_names=["zero", "one", "two"])  # the tiny world's CLIP
        >>> images = torch.rand(6, 1, 8, 8)
        >>> module.build_cache(images, torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> sorted(module.federated_state_dict()), tuple(module.cache_keys.shape)
        (['cache_keys'], (6, 64))
        >>> module(images).shape
        torch.Size([6, 3])
    """

    def __init__(
        self,
        class_names: list[str] | None = None,
        clip_model: str = "tiny-digits-clip",
        pretrained: str | None = TINY_WORLD_TAG,
        templates: str | list[str] = "digits",
        alpha: float = 1.0,
        beta: float = 5.0,
        train_keys: bool = True,
        train_alpha_beta: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        eps: float = 1e-4,
        scheduler: Literal["cosine", "none"] = "cosine",
        search_alpha_beta: bool = True,
        alpha_grid: list[float] | None = None,
        beta_grid: list[float] | None = None,
        augment_views: int = 10,
        encode_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if class_names is None:
            from lightning_addons.zoo.tinyclip import DIGIT_CLASS_NAMES

            class_names = list(DIGIT_CLASS_NAMES)
        self.class_names = validate_class_names(class_names)
        self.templates = resolve_templates(templates)
        validate_clip_reference(clip_model, pretrained)
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}.")
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"`scheduler` must be one of ['cosine', 'none'], got {scheduler!r}.")
        if not isinstance(augment_views, int) or augment_views < 1:
            raise ValueError(f"`augment_views` must be an integer >= 1, got {augment_views!r}.")
        if not isinstance(encode_batch_size, int) or encode_batch_size < 1:
            raise ValueError(f"`encode_batch_size` must be an integer >= 1, got {encode_batch_size!r}.")
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        self.alpha_grid = self._check_grid("alpha_grid", alpha_grid, DEFAULT_ALPHA_GRID)
        self.beta_grid = self._check_grid("beta_grid", beta_grid, DEFAULT_BETA_GRID)
        self.save_hyperparameters()
        self.num_classes = len(self.class_names)
        self._clip: dict[str, Any] = {}  # model/tokenizer kept out of the state dict and parameters
        # text classifier and logit scale: filled in setup (buffers: saved with checkpoints)
        self.register_buffer("text_weights", torch.zeros(0))
        self.register_buffer("logit_scale", torch.tensor(1.0))
        # the cache
        self.cache_keys = nn.Parameter(torch.zeros(0, 0), requires_grad=train_keys)
        self.register_buffer("cache_values", torch.zeros(0, self.num_classes))
        self.register_buffer("cache_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("initial_keys", torch.zeros(0, 0))  # the training-free cache
        if train_alpha_beta:
            self.alpha = nn.Parameter(torch.tensor(float(alpha)))
            self.beta = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.register_buffer("alpha", torch.tensor(float(alpha)))
            self.register_buffer("beta", torch.tensor(float(beta)))
        self.register_buffer("training_free_alpha", torch.tensor(float(alpha)))
        self.register_buffer("training_free_beta", torch.tensor(float(beta)))
        self.register_buffer("searched", torch.tensor(False))  # alpha/beta searched for the current keys
        top5 = self.num_classes > 5
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(self.num_classes, average="micro"))
            if top5:
                setattr(
                    self, f"{stage}_acc_top5", MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
                )
        self.test_acc_zero_shot = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc_training_free = MulticlassAccuracy(self.num_classes, average="micro")
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.last_search: dict[str, float] = {}

    @staticmethod
    def _check_grid(name: str, grid, default) -> list[float]:
        if grid is None:
            return list(default)
        grid = list(grid)
        if not grid or any(not isinstance(v, (int, float)) or v < 0 for v in grid):
            raise ValueError(f"`{name}` must be a non-empty list of numbers >= 0, got {grid!r}.")
        return [float(v) for v in grid]

    # ------------------------------------------------------------------ CLIP
    @property
    def clip(self) -> nn.Module:
        """The frozen CLIP model (built on first use)."""
        self._ensure_clip()
        return self._clip["model"]

    def _ensure_clip(self) -> None:
        if self._clip:
            if self.text_weights.numel():
                model = self._clip["model"]
                if next(model.parameters()).device != self.text_weights.device:
                    model.to(self.text_weights.device)
            return
        model, tokenizer = load_clip(self.hparams.clip_model, self.hparams.pretrained)
        model = model.eval().requires_grad_(False)
        self._clip = {"model": model, "tokenizer": tokenizer}
        device = self.text_weights.device
        model.to(device)
        if not self.text_weights.numel():
            self._compute_text_weights()

    @property
    def feature_dim(self) -> int:
        self._ensure_clip()
        return int(self.text_weights.shape[1])

    @property
    def encoder_fingerprint(self) -> str:
        """Identifies the frozen encoder (for feature caches): model, weights and preprocessing."""
        return f"{self.hparams.clip_model}|{self.hparams.pretrained}"

    @torch.no_grad()
    def _compute_text_weights(self) -> None:
        model, tokenizer = self._clip["model"], self._clip["tokenizer"]
        device = next(model.parameters()).device
        rows = []
        for name in self.class_names:
            tokens = tokenizer([t.format(name) for t in self.templates]).to(device)
            emb = F.normalize(model.encode_text(tokens).float(), dim=-1).mean(0)
            rows.append(F.normalize(emb, dim=-1))
        self.text_weights = torch.stack(rows).to(self.text_weights.device)
        scale = model.logit_scale.exp() if hasattr(model, "logit_scale") else torch.tensor(100.0)
        self.logit_scale = scale.detach().float().to(self.text_weights.device).reshape(())

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1|3, H, W]`` in [0, 1] -> CLIP input (3 channels, model size, normalised)."""
        return clip_preprocess(self.clip, images)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of images through the frozen encoder (batched, no grad)."""
        model = self.clip
        device = self.text_weights.device
        out = []
        bs = self.hparams.encode_batch_size
        for i in range(0, len(images), bs):
            x = self.preprocess(images[i : i + bs].to(device))
            out.append(F.normalize(model.encode_image(x).float(), dim=-1))
        if not out:
            return torch.zeros(0, self.feature_dim, device=device)
        return torch.cat(out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features from images ``[B, C, H, W]`` or precomputed features ``[B, D]``.

        Raises:
            ValueError: features whose dimension differs from this CLIP's (computed by another model).
        """
        if x.ndim == 2:
            dim = self.feature_dim
            if x.shape[1] != dim:
                raise ValueError(
                    f"Features have dimension {x.shape[1]} but {self.hparams.clip_model!r} produces {dim}-d "
                    f"features: were they computed with a different CLIP model?"
                )
            return F.normalize(x.float(), dim=-1)
        return self.encode_images(x)

    # ------------------------------------------------------------------ cache
    @torch.no_grad()
    def build_cache(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Build the keys from cache images (averaged over ``augment_views`` views) and one-hot values.

        Raises:
            ValueError: labels of the wrong shape or outside ``[0, N)``, no images.
        """
        labels = torch.as_tensor(labels, dtype=torch.long)
        if images.ndim not in (2, 4) or len(images) == 0 or labels.shape != (len(images),):
            raise ValueError(
                f"`build_cache` needs images [M, C, H, W] (or features [M, D]) and labels [M] with M > 0, "
                f"got {tuple(images.shape)} and {tuple(labels.shape)}."
            )
        if images.ndim == 2:
            keys = self.features(images)
        else:
            views = [self.encode_images(images)]
            g = torch.Generator().manual_seed(self.hparams.seed)
            for _ in range(self.hparams.augment_views - 1):
                views.append(self.encode_images(_random_crops(images, g)))
            keys = F.normalize(torch.stack(views).mean(0), dim=-1)
        self.set_cache(keys, labels)

    @torch.no_grad()
    def set_cache(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Install cache keys ``[M, D]`` (normalised features) and their labels ``[M]``.

        Raises:
            ValueError: dimension mismatch with this CLIP, labels out of range or of the wrong length.
        """
        dim = self.feature_dim
        labels = torch.as_tensor(labels, dtype=torch.long)
        if keys.ndim != 2 or keys.shape[1] != dim:
            raise ValueError(
                f"Cache keys must be [M, {dim}] for {self.hparams.clip_model!r}, got {tuple(keys.shape)}: "
                f"were they computed with a different CLIP model?"
            )
        if labels.shape != (len(keys),) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"Cache labels must be [{len(keys)}] integers in [0, {self.num_classes}), got shape "
                f"{tuple(labels.shape)} and range [{int(labels.min())}, {int(labels.max())}]."
            )
        device = self.text_weights.device
        self.cache_keys = nn.Parameter(
            keys.detach().float().clone().to(device), requires_grad=self.hparams.train_keys
        )
        self.cache_values = F.one_hot(labels, self.num_classes).float().to(device)
        self.cache_labels = labels.clone().to(device)
        self.initial_keys = self.cache_keys.detach().clone()
        self.searched = torch.tensor(False, device=device)

    @property
    def has_cache(self) -> bool:
        return self.cache_keys.numel() > 0

    @property
    def shots_per_class(self) -> list[int]:
        return torch.bincount(self.cache_labels, minlength=self.num_classes).tolist()

    # ------------------------------------------------------------------ logits
    def zero_shot_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * features @ self.text_weights.T

    def logits_from_features(self, features: torch.Tensor, keys=None, alpha=None, beta=None) -> torch.Tensor:
        """Tip-Adapter logits of normalised features (defaults: the current keys, alpha, beta)."""
        if not self.has_cache:
            raise RuntimeError(
                "The cache is empty: call `build_cache`/`set_cache` or fit with a cache datamodule."
            )
        keys = self.cache_keys if keys is None else keys
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        return tip_adapter_logits(
            features, self.text_weights, keys, self.cache_values, self.logit_scale, alpha, beta
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    # ------------------------------------------------------------------ federated contract
    def federated_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the trainable tensors (``cache_keys``; ``alpha``/``beta`` if trainable), detached copies."""
        out = {"cache_keys": self.cache_keys.detach().clone()}
        if self.hparams.train_alpha_beta:
            out["alpha"] = self.alpha.detach().clone()
            out["beta"] = self.beta.detach().clone()
        return out

    @torch.no_grad()
    def load_federated_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors produced by :meth:`federated_state_dict` in place (optimiser state stays valid).

        Raises:
            ValueError: missing/unexpected names, wrong shapes or non-finite values (nothing is loaded).
        """
        expected = self.federated_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"Federated state must hold exactly {sorted(expected)}; missing {missing}, unexpected {unexpected}."
            )
        for name, ref in expected.items():
            value = torch.as_tensor(state[name])
            if value.shape != ref.shape:
                raise ValueError(
                    f"Federated tensor {name!r} must have shape {tuple(ref.shape)}, got {tuple(value.shape)}."
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"Federated tensor {name!r} holds non-finite values (NaN/inf): rejected.")
        for name in expected:
            getattr(self, name).copy_(torch.as_tensor(state[name]).to(getattr(self, name)))
        self.searched = torch.tensor(False, device=self.searched.device)

    # ------------------------------------------------------------------ alpha / beta search
    @torch.no_grad()
    def collect_features(self, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for batch in loader:
            x, y = batch[0], batch[1]
            feats.append(self.features(x.to(self.text_weights.device)))
            labels.append(y.to(self.text_weights.device))
        return torch.cat(feats), torch.cat(labels)

    @torch.no_grad()
    def search_alpha_beta(
        self, val_loader: Iterable, keys: torch.Tensor | None = None, apply: bool = True
    ) -> dict[str, float]:
        """Grid search of alpha x beta maximising accuracy on ``val_loader`` (validation data only).

        Ties keep the first grid point (smallest alpha, then smallest beta). Returns ``{"alpha", "beta",
        "val_acc", "val_acc_zero_shot"}`` and, with ``apply``, sets the module's alpha and beta.
        """
        feats, labels = self.collect_features(val_loader)
        keys = self.cache_keys.detach() if keys is None else keys
        result = search_alpha_beta(
            self.zero_shot_logits(feats),
            feats,
            labels,
            keys,
            self.cache_values,
            self.alpha_grid,
            self.beta_grid,
        )
        if apply:
            self.alpha.fill_(result["alpha"])
            self.beta.fill_(result["beta"])
            self.searched.fill_(True)
        self.last_search = result
        return result

    def _attached_trainer(self) -> pl.Trainer | None:
        """The Trainer this module is attached to, or None (public API: ``trainer`` raises when detached)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _val_loader(self):
        trainer = self._attached_trainer()
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and hasattr(dm, "val_dataloader"):
            return dm.val_dataloader()
        return None

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        self._ensure_clip()
        trainer = self._attached_trainer()
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if isinstance(dm, EncoderClient):
            dm.attach_encoder(self.encode_images, self.encoder_fingerprint, zero_shot=self._zero_shot_predict)
        if not self.has_cache and isinstance(dm, CacheSetSource):
            images, labels = dm.cache_set()
            self.build_cache(images, labels)

    @torch.no_grad()
    def _zero_shot_predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_logits(self.encode_images(images)).argmax(-1).cpu()

    def on_fit_start(self) -> None:
        self._ensure_clip()
        if not self.has_cache:
            raise RuntimeError(
                "CacheCLIPAdapter has no cache: use a datamodule with `cache_set()` (SyntheticCacheDataModule) "
                "or call `build_cache(images, labels)` before fitting."
            )
        if self.hparams.search_alpha_beta:
            loader = self._val_loader()
            if loader is not None:
                user = (float(self.alpha.detach()), float(self.beta.detach()))
                res = self.search_alpha_beta(loader, keys=self.initial_keys)
                self.training_free_alpha.fill_(res["alpha"])
                self.training_free_beta.fill_(res["beta"])
                with torch.no_grad():  # training starts from the given alpha/beta (Tip-Adapter-F init)
                    self.alpha.fill_(user[0])
                    self.beta.fill_(user[1])
                rank_zero_info(f"[CacheCLIPAdapter] training-free search on validation data: {res}")
        self.searched.fill_(False)

    def on_fit_end(self) -> None:
        if self.hparams.search_alpha_beta:
            loader = self._val_loader()
            if loader is not None:
                res = self.search_alpha_beta(loader)
                rank_zero_info(f"[CacheCLIPAdapter] fine-tuned search on validation data: {res}")

    def _search_if_needed(self) -> None:
        if self.trainer.state.fn == "fit" or not self.hparams.search_alpha_beta or bool(self.searched):
            return
        loader = self._val_loader()
        if loader is None:
            return
        res = self.search_alpha_beta(loader)
        if torch.equal(self.cache_keys.detach(), self.initial_keys):
            self.training_free_alpha.fill_(res["alpha"])
            self.training_free_beta.fill_(res["beta"])

    def on_validation_start(self) -> None:
        self._search_if_needed()

    def on_test_start(self) -> None:
        self._search_if_needed()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.val_acc(logits, y)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)
        if hasattr(self, "val_acc_top5"):
            self.val_acc_top5(logits, y)
            self.log("val_acc_top5", self.val_acc_top5, on_epoch=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        f = self.features(x)
        logits = self.logits_from_features(f)
        self.log("test_loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.test_acc(logits, y)
        self.log("test_acc", self.test_acc, on_epoch=True)
        if hasattr(self, "test_acc_top5"):
            self.test_acc_top5(logits, y)
            self.log("test_acc_top5", self.test_acc_top5, on_epoch=True)
        self.test_acc_zero_shot(self.zero_shot_logits(f), y)
        self.log("test_acc_zero_shot", self.test_acc_zero_shot, on_epoch=True)
        tf = self.logits_from_features(
            f, keys=self.initial_keys, alpha=self.training_free_alpha, beta=self.training_free_beta
        )
        self.test_acc_training_free(tf, y)
        self.log("test_acc_training_free", self.test_acc_training_free, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        rows = [
            ("zero-shot CLIP", float(self.test_acc_zero_shot.compute()), "-", "-"),
            (
                "training-free cache",
                float(self.test_acc_training_free.compute()),
                f"{float(self.training_free_alpha):g}",
                f"{float(self.training_free_beta):g}",
            ),
            (
                "fine-tuned cache"
                if not torch.equal(self.cache_keys.detach(), self.initial_keys)
                else "current cache",
                float(self.test_acc.compute()),
                f"{float(self.alpha.detach()):g}",
                f"{float(self.beta.detach()):g}",
            ),
        ]
        rank_zero_info(format_accuracy_table(rows, shots=self.shots_per_class))

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(-1)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("Nothing to train: set `train_keys=True` or `train_alpha_beta=True`.")
        hp = self.hparams
        opt = torch.optim.AdamW(params, lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine" and self._attached_trainer() is not None and self.trainer.max_epochs:
            steps = self.trainer.estimated_stepping_batches
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the cache size is known only once a cache exists: adopt the stored shapes before loading
        for name in ("cache_keys", "cache_values", "cache_labels", "initial_keys", "text_weights"):
            key = prefix + name
            if key in state_dict and getattr(self, name).shape != state_dict[key].shape:
                current = getattr(self, name)
                new = torch.zeros_like(state_dict[key], device=current.device)
                if isinstance(current, nn.Parameter):
                    setattr(self, name, nn.Parameter(new, requires_grad=current.requires_grad))
                else:
                    setattr(self, name, new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _random_crops(images: torch.Tensor, generator: torch.Generator, scale=(0.7, 1.0)) -> torch.Tensor:
    """One random resized crop per image (no flips: digits are not flip-invariant)."""
    n, _, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(n):
        s = float(torch.empty(1).uniform_(*scale, generator=generator))
        ch, cw = max(1, round(h * s**0.5)), max(1, round(w * s**0.5))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = images[i : i + 1, :, top : top + ch, left : left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


def format_accuracy_table(rows: list[tuple[str, float, str, str]], shots: list[int] | None = None) -> str:
    """A plain-text table of (method, accuracy, alpha, beta) rows."""
    lines = [f"{'method':<22}{'test acc':>10}{'alpha':>8}{'beta':>8}", "-" * 48]
    for name, acc, a, b in rows:
        lines.append(f"{name:<22}{acc:>10.4f}{a:>8}{b:>8}")
    if shots is not None:
        lines.append(f"cache: {sum(shots)} keys, shots per class {shots}")
    return "\n".join(lines)
