"""Prompt learning (PromptFL) and FedCLIP's attention adapter on a frozen open_clip CLIP, as LightningModules.

Both are the federated baselines of CacheFL: the CLIP model is frozen and kept *outside* the module's
parameters and state dict (as in :class:`~lightning_addons.modules.CacheCLIPAdapter`), so
:class:`~lightning_addons.federated.FederatedSimulation` exchanges only the small trained part:

* :class:`PromptCLIPClassifier` -- CoOp context vectors in the text tower (PromptFL): ``M * W`` floats;
  the text tower runs on every step (10 class prompts), the image tower never does when batches are
  cached features.
* :class:`AdapterCLIPClassifier` -- FedCLIP's attention adapter on the image features with the frozen
  zero-shot text classifier: ``2 * D * H + 2 * H + 2 * D`` floats (+ ``2 * H`` batch-norm statistics).

Batches are ``(x, y)`` (extra items ignored) where ``x`` is images ``[B, C, H, W]`` in [0, 1] or
precomputed L2-normalised image features ``[B, D]`` of the same CLIP (e.g.
``SyntheticCacheDataModule.split_features``).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_addons.modules.clip_backbone import (
    TINY_WORLD_TAG,
    clip_preprocess,
    load_clip,
    validate_clip_reference,
)
from lightning_addons.modules.nn.cache import resolve_templates, validate_class_names
from lightning_addons.modules.nn.clip_tuning import AttentionAdapter, PromptLearner, encode_prompt_embeddings


class _FrozenCLIPClassifier(pl.LightningModule):
    """Shared shell: frozen CLIP outside the state dict, feature/image batches, accuracy metrics, AdamW."""

    def __init__(
        self,
        class_names: list[str] | None,
        clip_model: str,
        pretrained: str | None,
        templates: str | list[str],
        lr: float,
        weight_decay: float,
        scheduler: str,
        encode_batch_size: int,
    ) -> None:
        super().__init__()
        if class_names is None:
            from lightning_addons.zoo.tinyclip import DIGIT_CLASS_NAMES

            class_names = list(DIGIT_CLASS_NAMES)
        self.class_names = validate_class_names(class_names)
        self.templates = resolve_templates(templates)
        validate_clip_reference(clip_model, pretrained)
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"`lr` must be a number > 0, got {lr!r}.")
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"`weight_decay` must be a number >= 0, got {weight_decay!r}.")
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"`scheduler` must be one of ['cosine', 'none'], got {scheduler!r}.")
        if not isinstance(encode_batch_size, int) or encode_batch_size < 1:
            raise ValueError(f"`encode_batch_size` must be an integer >= 1, got {encode_batch_size!r}.")
        self.num_classes = len(self.class_names)
        model, tokenizer = load_clip(clip_model, pretrained)
        self._clip: dict[str, Any] = {"model": model.eval().requires_grad_(False), "tokenizer": tokenizer}
        self.register_buffer("text_weights", self._zero_shot_weights())
        scale = model.logit_scale.exp() if hasattr(model, "logit_scale") else torch.tensor(100.0)
        self.register_buffer("logit_scale", scale.detach().float().reshape(()))
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(self.num_classes, average="micro"))

    # ------------------------------------------------------------------ CLIP
    @property
    def clip(self) -> nn.Module:
        """The frozen CLIP model (on this module's device)."""
        model = self._clip["model"]
        device = self.logit_scale.device
        if next(model.parameters()).device != device:
            model.to(device)
        return model

    @property
    def feature_dim(self) -> int:
        return int(self.text_weights.shape[1])

    @torch.no_grad()
    def _zero_shot_weights(self) -> torch.Tensor:
        model, tokenizer = self._clip["model"], self._clip["tokenizer"]
        rows = []
        for name in self.class_names:
            emb = F.normalize(
                model.encode_text(tokenizer([t.format(name) for t in self.templates])).float(), dim=-1
            )
            rows.append(F.normalize(emb.mean(0), dim=-1))
        return torch.stack(rows)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of images through the frozen image tower (batched, no grad)."""
        model, bs = self.clip, self.hparams.encode_batch_size
        out = [
            F.normalize(
                model.encode_image(clip_preprocess(model, images[i : i + bs].to(self.device))).float(), dim=-1
            )
            for i in range(0, len(images), bs)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim, device=self.device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image features from images ``[B, C, H, W]`` or precomputed features ``[B, D]``.

        Raises:
            ValueError: features whose dimension differs from this CLIP's.
        """
        if x.ndim == 2:
            if x.shape[1] != self.feature_dim:
                raise ValueError(
                    f"Features have dimension {x.shape[1]} but {self.hparams.clip_model!r} produces "
                    f"{self.feature_dim}-d features: were they computed with a different CLIP model?"
                )
            return F.normalize(x.float(), dim=-1)
        return self.encode_images(x)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    # ------------------------------------------------------------------ federated state
    def federated_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors clients train and exchange (detached copies)."""
        return {k: v.detach().clone() for k, v in self._federated_tensors().items()}

    @torch.no_grad()
    def load_federated_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors produced by :meth:`federated_state_dict` in place.

        Raises:
            ValueError: missing/unexpected names or wrong shapes (nothing is loaded).
        """
        own = self._federated_tensors()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"Federated state must hold exactly {sorted(own)}; missing {missing}, unexpected {unexpected}."
            )
        bad = [k for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise ValueError(
                "Federated state shapes differ: "
                + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in bad)
            )
        for k, v in own.items():
            v.copy_(state[k].to(v.device, v.dtype))

    def _federated_tensors(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        metric = getattr(self, f"{stage}_acc")
        metric(logits, y)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log(f"{stage}_acc", metric, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(-1)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        trainer = self._trainer
        if hp.scheduler == "cosine" and trainer is not None and trainer.max_epochs:
            steps = max(1, int(trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


class PromptCLIPClassifier(_FrozenCLIPClassifier):
    """CoOp prompt learning on a frozen open_clip CLIP; only the context vectors train (PromptFL when federated).

    ``logits = logit_scale * f @ normalize(text(prompts(ctx))).T`` with ``f`` the normalised image features
    and ``prompts`` the :class:`~lightning_addons.modules.nn.PromptLearner` prompts ``"<ctx> <name><suffix>"``.
    The federated state is ``{"prompt.context": [M, W]}``.

    Args:
        class_names: distinct class names (default: the ten digit names of the embedded world).
        clip_model, pretrained: the CLIP (as for :class:`~lightning_addons.modules.CacheCLIPAdapter`); the model
            is loaded when the module is built (the context's shape depends on it).
        num_context: number of context vectors ``M`` (random init, CoOp's default 16 suits large CLIPs;
            ignored with ``context_init``).
        context_init: initialise the context from these words (e.g. ``'a photo of the number: "'``); then
            ``M`` is their token count.
        suffix: text after the class name (``'".'`` closes the digits template's quote).
        templates: the zero-shot templates of :attr:`text_weights` (reference only; not used in the logits).
        lr, weight_decay, scheduler: AdamW and a cosine schedule over each ``fit`` (or ``"none"``).
        seed: seed of the random context initialisation.

    Raises:
        ValueError: bad class names, CLIP reference, sizes or a context/suffix that does not fit the prompt.
        TypeError: a CLIP whose text tower is not an open_clip transformer.

    Examples:
        >>> import torch
        >>> module = PromptCLIPClassifier(class_names=["zero", "one", "two"], context_init='a photo of the number: "',
        ...                               suffix='".')
        >>> sorted(module.federated_state_dict()), tuple(module.prompt.context.shape)
        (['prompt.context'], (7, 64))
        >>> module(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        class_names: list[str] | None = None,
        clip_model: str = "tiny-digits-clip",
        pretrained: str | None = TINY_WORLD_TAG,
        num_context: int = 4,
        context_init: str | None = None,
        suffix: str = ".",
        templates: str | list[str] = "digits",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        scheduler: Literal["cosine", "none"] = "cosine",
        encode_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        if not isinstance(num_context, int) or num_context < 1:
            raise ValueError(f"`num_context` must be a positive integer, got {num_context!r}.")
        if not isinstance(suffix, str):
            raise ValueError(f"`suffix` must be a string, got {suffix!r}.")
        super().__init__(
            class_names, clip_model, pretrained, templates, lr, weight_decay, scheduler, encode_batch_size
        )
        self.save_hyperparameters()
        self.prompt = PromptLearner.from_clip(
            self._clip["model"],
            self._clip["tokenizer"],
            self.class_names,
            num_context=num_context,
            context_init=context_init,
            suffix=suffix,
            generator=torch.Generator().manual_seed(seed),
        )

    def text_features(self) -> torch.Tensor:
        """Normalised class text features ``[N, D]`` of the current prompts (differentiable in the context)."""
        return F.normalize(
            encode_prompt_embeddings(self.clip, self.prompt(), self.prompt.tokens).float(), dim=-1
        )

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * features @ self.text_features().T


class AdapterCLIPClassifier(_FrozenCLIPClassifier):
    """FedCLIP's attention adapter on frozen CLIP image features with the frozen zero-shot text classifier.

    ``logits = logit_scale * normalize(f * softmax(MLP(f))) @ W.T``, ``W`` the normalised mean of the
    template text embeddings per class. The adapter's parameters and (with ``norm="batch"``) its
    batch-norm running statistics are the federated state (FedCLIP averages them all; without the
    statistics the server would evaluate with batch norm's initial ones).

    Args:
        class_names, clip_model, pretrained, templates: as for :class:`PromptCLIPClassifier`.
        hidden: the adapter's hidden width (default the feature dimension, as in FedCLIP).
        norm: ``"batch"`` (FedCLIP), ``"layer"`` or ``"none"``.
        lr, weight_decay, scheduler: AdamW and a cosine schedule over each ``fit`` (or ``"none"``).
        seed: seed of the adapter's initialisation.

    Raises:
        ValueError: bad class names, CLIP reference, sizes or ``norm``.

    Examples:
        >>> import torch
        >>> module = AdapterCLIPClassifier(class_names=["zero", "one", "two"])
        >>> sorted(module.federated_state_dict())
        ['adapter.fc1.bias', 'adapter.fc1.weight', 'adapter.fc2.bias', 'adapter.fc2.weight', 'adapter.norm.bias', \
'adapter.norm.running_mean', 'adapter.norm.running_var', 'adapter.norm.weight']
        >>> module(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        class_names: list[str] | None = None,
        clip_model: str = "tiny-digits-clip",
        pretrained: str | None = TINY_WORLD_TAG,
        hidden: int | None = None,
        norm: Literal["batch", "layer", "none"] = "batch",
        templates: str | list[str] = "digits",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        scheduler: Literal["cosine", "none"] = "cosine",
        encode_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"`hidden` must be a positive integer or None, got {hidden!r}.")
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"`norm` must be one of ['batch', 'layer', 'none'], got {norm!r}.")
        super().__init__(
            class_names, clip_model, pretrained, templates, lr, weight_decay, scheduler, encode_batch_size
        )
        self.save_hyperparameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.adapter = AttentionAdapter(self.feature_dim, hidden=hidden, norm=norm)

    def _federated_tensors(self) -> dict[str, torch.Tensor]:
        out = super()._federated_tensors()
        norm = self.adapter.norm
        if isinstance(norm, nn.BatchNorm1d):
            out["adapter.norm.running_mean"] = norm.running_mean
            out["adapter.norm.running_var"] = norm.running_var
        return out

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        adapted = F.normalize(self.adapter(features), dim=-1)
        return self.logit_scale * adapted @ self.text_weights.T
