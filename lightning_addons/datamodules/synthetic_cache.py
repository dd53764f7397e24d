"""Class-balanced cache sets from a generator, and a datamodule that serves cached CLIP features.

* Generators (:class:`TinyUNetGenerator`, :class:`DiffusersPipelineGenerator`, :class:`FewShotGenerator`)
  return ``n`` images ``[n, C, H, W]`` in [0, 1] for one class.
* :class:`CacheInitializer` asks a generator for exactly ``K`` images per class, optionally keeps only
  the images a judge (zero-shot CLIP or a reference classifier) agrees with, refilling until every
  class has ``K``, and reports per-class fidelity.
* :class:`SyntheticCacheDataModule` wraps a downstream datamodule (default: the private 70% of
  digits with a domain shift), builds the cache set, and, once a
  :class:`~lightning_addons.modules.CacheCLIPAdapter` attaches its frozen encoder, serves each split as
  precomputed features (encoded once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_addons._imports import require
from lightning_addons._progress import Progress

Judge = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------- generators
class CacheGenerator:
    """Protocol: ``generate(class_index, class_name, n, seed)`` -> ``n`` images ``[n, C, H, W]`` in [0, 1]."""

    def generate(
        self, class_index: int, class_name: str, n: int, seed: int
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class TinyUNetGenerator(CacheGenerator):
    """The embedded class-conditional UNet (:mod:`lightning_addons.zoo.tinyunet`), DDIM-sampled.

    Class indices are the UNet's labels (the ten digits); class names are ignored.

    Args:
        steps: DDIM steps.
        guidance_scale: classifier-free guidance scale (1 disables it).
        weights: a weights file (default: the project's shipped/cached weights).

    Raises:
        ValueError: ``steps < 1`` or ``guidance_scale < 0``.
    """

    def __init__(self, steps: int = 25, guidance_scale: float = 1.0, weights: str | None = None) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
        if not guidance_scale >= 0:
            raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale!r}.")
        self.steps, self.guidance_scale, self.weights = steps, float(guidance_scale), weights
        self._unet = None

    def generate(self, class_index: int, class_name: str, n: int, seed: int) -> torch.Tensor:
        from lightning_addons.zoo.tinyunet import NUM_CLASSES, create_tiny_unet, sample_ddim

        if not 0 <= class_index < NUM_CLASSES:
            raise ValueError(
                f"The tiny UNet knows classes 0..{NUM_CLASSES - 1}, got class index {class_index}."
            )
        if self._unet is None:
            self._unet = create_tiny_unet(pretrained=True, weights=self.weights)
        unet, scheduler = self._unet
        g = torch.Generator().manual_seed(seed)
        labels = torch.full((n,), class_index, dtype=torch.long)
        return sample_ddim(
            unet, scheduler, labels, steps=self.steps, guidance_scale=self.guidance_scale, generator=g
        )

    def describe(self) -> str:
        return f"tiny class-conditional UNet (DDIM {self.steps} steps, guidance {self.guidance_scale})"


class DiffusersPipelineGenerator(CacheGenerator):
    """Any diffusers text-to-image pipeline (e.g. Stable Diffusion from a local folder), one prompt per class.

    The pipeline is loaded on first use (``DiffusionPipeline.from_pretrained``), called once per class and
    refill round with ``num_images_per_prompt=n``, ``output_type="pt"`` and a CPU ``torch.Generator``
    seeded by the caller (so a cache set is reproducible across devices), and its images are returned as
    ``[n, C, H, W]`` floats in [0, 1] on the CPU.

    Args:
        pipeline: a local folder or hub id for ``DiffusionPipeline.from_pretrained`` (or a pipeline object,
            any callable with the diffusers text-to-image signature).
        prompt: prompt template with one ``{}`` for the class name.
        num_inference_steps, guidance_scale, height, width: passed to the pipeline.
        output_size: resize the images to this side length (``None`` keeps the pipeline's size).
        grayscale: average the channels to one (e.g. for digits).
        device: where the pipeline runs; ``torch_dtype``: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        local_files_only: never download (default True: point ``pipeline`` at a local folder).

    Raises:
        ValueError: a prompt without exactly one ``{}``; an empty ``pipeline`` string or one that is neither
            a string nor callable; ``num_inference_steps < 1``, ``guidance_scale < 0``, a non-positive
            ``height``/``width``/``output_size``, an unknown ``torch_dtype``.
        FileNotFoundError: ``pipeline`` is a local path (``/``, ``./``, ``../``, ``~``) that does not exist;
            at first use, a pipeline that cannot be loaded (names the value and ``local_files_only``).

    Examples:
        >>> import torch
        >>> def pipe(prompt, num_images_per_prompt, generator, output_type, **kw):  # a stand-in pipeline
        ...     return (torch.rand(num_images_per_prompt, 3, 16, 16, generator=generator),)
        >>> gen = DiffusersPipelineGenerator(pipe, output_size=8, grayscale=True)
        >>> tuple(gen.generate(0, "cat", n=2, seed=0).shape)
        (2, 1, 8, 8)
    """

    DTYPES = ("float32", "float16", "bfloat16")

    def __init__(
        self,
        pipeline: Any,
        prompt: str = "a photo of a {}.",
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        output_size: int | None = None,
        grayscale: bool = False,
        device: str = "cpu",
        torch_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        local_files_only: bool = True,
    ) -> None:
        if not isinstance(prompt, str) or prompt.count("{}") != 1:
            raise ValueError(f"`prompt` must hold exactly one '{{}}' for the class name, got {prompt!r}.")
        if isinstance(pipeline, str):
            if not pipeline.strip():
                raise ValueError(
                    "`pipeline` must be a local diffusers pipeline folder, a hub id or a pipeline object, "
                    f"got the empty string {pipeline!r}."
                )
            if pipeline.startswith(("/", "./", "../", "~")):
                from pathlib import Path

                if not Path(pipeline).expanduser().is_dir():
                    raise FileNotFoundError(
                        f"`pipeline` folder {pipeline!r} does not exist (a local diffusers pipeline)."
                    )
        elif not callable(pipeline):
            raise ValueError(
                "`pipeline` must be a local diffusers pipeline folder, a hub id or a callable pipeline object, "
                f"got {type(pipeline).__name__}."
            )
        if (
            not isinstance(num_inference_steps, int)
            or isinstance(num_inference_steps, bool)
            or num_inference_steps < 1
        ):
            raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
        if not (isinstance(guidance_scale, (int, float)) and guidance_scale >= 0):
            raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}.")
        for name, value in (("height", height), ("width", width), ("output_size", output_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be None or an integer >= 1, got {value!r}.")
        if torch_dtype not in self.DTYPES:
            raise ValueError(f"`torch_dtype` must be one of {list(self.DTYPES)}, got {torch_dtype!r}.")
        self.pipeline_ref, self.prompt = pipeline, prompt
        self.kwargs: dict[str, Any] = {
            "num_inference_steps": num_inference_steps,
            "guidance_scale": float(guidance_scale),
        }
        if height is not None:
            self.kwargs["height"] = height
        if width is not None:
            self.kwargs["width"] = width
        self.output_size, self.grayscale = output_size, grayscale
        self.device, self.torch_dtype, self.local_files_only = device, torch_dtype, local_files_only
        #: images the pipeline's safety checker flagged (and blanked), over all calls
        self.nsfw_flagged = 0
        self._pipe = None if isinstance(pipeline, str) else pipeline
        if self._pipe is not None and hasattr(self._pipe, "set_progress_bar_config"):
            self._pipe.set_progress_bar_config(disable=True)

    def _pipeline(self):
        if self._pipe is None:
            import re

            diffusers = require("diffusers", feature="DiffusersPipelineGenerator")
            dtype = getattr(torch, self.torch_dtype)
            # diffusers renamed `torch_dtype` to `dtype` (and deprecated the old name); older releases
            # ignore an unknown `dtype`, so pass the name this release documents
            doc = diffusers.DiffusionPipeline.from_pretrained.__doc__ or ""
            dtype_key = "dtype" if re.search(r"^\s+dtype \(", doc, flags=re.M) else "torch_dtype"
            try:
                pipe = diffusers.DiffusionPipeline.from_pretrained(
                    self.pipeline_ref, local_files_only=self.local_files_only, **{dtype_key: dtype}
                )
            except (OSError, ValueError) as err:
                raise FileNotFoundError(
                    f"`pipeline` {self.pipeline_ref!r} could not be loaded as a diffusers pipeline "
                    f"(local_files_only={self.local_files_only}; a folder needs model_index.json, a hub id "
                    f"must be in the local cache unless local_files_only=False): {err}"
                ) from err
            self._pipe = pipe.to(self.device)
            if hasattr(self._pipe, "set_progress_bar_config"):
                self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def generate(self, class_index: int, class_name: str, n: int, seed: int) -> torch.Tensor:
        import warnings

        pipe = self._pipeline()
        g = torch.Generator(device="cpu").manual_seed(seed)
        out = pipe(
            self.prompt.format(class_name),
            num_images_per_prompt=n,
            generator=g,
            output_type="pt",
            **self.kwargs,
        )
        images = out.images if hasattr(out, "images") else out[0]
        flagged = getattr(out, "nsfw_content_detected", None)
        if flagged:
            count = sum(bool(f) for f in flagged)
            if count:
                self.nsfw_flagged += count
                warnings.warn(
                    f"The pipeline's safety checker blanked {count} of {n} images of class {class_name!r}: "
                    "they enter the cache set as black images unless a fidelity filter rejects them.",
                    stacklevel=2,
                )
        images = torch.as_tensor(images).float().cpu()
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
        if self.grayscale and images.ndim == 4:
            images = images.mean(1, keepdim=True)
        if self.output_size is not None and images.ndim == 4:
            images = F.interpolate(
                images, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False
            )
        return images.clamp(0, 1)

    def describe(self) -> str:
        ref = self.pipeline_ref if isinstance(self.pipeline_ref, str) else type(self.pipeline_ref).__name__
        return f"diffusers pipeline {ref!r} (prompt {self.prompt!r})"


class FewShotGenerator(CacheGenerator):
    """A real few-shot set: draws ``n`` distinct images of the class from labelled images (seeded).

    Raises:
        ValueError: fewer than ``n`` images of a class (names the class and the count).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"FewShotGenerator needs images [M, C, H, W] and labels [M], got {tuple(images.shape)} and "
                f"{tuple(torch.as_tensor(labels).shape)}."
            )
        self.images, self.labels = images, torch.as_tensor(labels)
        self._used: dict[int, int] = {}

    def generate(self, class_index: int, class_name: str, n: int, seed: int) -> torch.Tensor:
        idx = torch.nonzero(self.labels == class_index).flatten()
        start = self._used.get(class_index, 0)
        if start + n > len(idx):
            raise ValueError(
                f"The few-shot set holds {len(idx)} images of class {class_name!r} (index {class_index}); "
                f"{start + n} were requested."
            )
        # one fixed permutation per class (seeded by the first request), consumed in order: no repeats on refill
        if start == 0:
            self._perm = getattr(self, "_perm", {})
            self._perm[class_index] = idx[
                torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))
            ]
        chosen = self._perm[class_index][start : start + n]
        self._used[class_index] = start + n
        return self.images[chosen].float().clone()

    def describe(self) -> str:
        return f"real few-shot set ({len(self.images)} labelled images)"


# ---------------------------------------------------------------------------------------------- judges
class ReferenceClassifierJudge:
    """Logistic regression on real labelled images (e.g. the public split); predicts generated images' classes.

    Generated images are resized to the reference images' size before prediction.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_iter: int = 2000) -> None:
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        self.shape = tuple(images.shape[1:])
        with threadpool_limits(1):
            self.clf = LogisticRegression(max_iter=max_iter).fit(
                images.flatten(1).numpy(), torch.as_tensor(labels).numpy()
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from threadpoolctl import threadpool_limits

        c, h, w = self.shape
        x = images.float()
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if x.shape[1] != c:
            x = x.mean(1, keepdim=True).expand(-1, c, -1, -1)
        with threadpool_limits(1):
            return torch.from_numpy(self.clf.predict(x.flatten(1).numpy())).long()


# ---------------------------------------------------------------------------------------------- initializer
@dataclass
class CacheSet:
    """Exactly ``shots`` images per class, in class order, and the fidelity report."""

    images: torch.Tensor
    labels: torch.Tensor
    report: dict[str, Any] = field(default_factory=dict)

    def fidelity_table(self) -> str:
        rows = [f"{'class':<12}{'generated':>10}{'agreed':>8}{'fidelity':>10}{'kept':>6}"]
        for c in self.report.get("per_class", []):
            fid = "-" if c["fidelity"] is None else f"{c['fidelity']:.3f}"
            agreed = "-" if c["agreed"] is None else c["agreed"]
            rows.append(f"{c['name']:<12}{c['generated']:>10}{agreed:>8}{fid:>10}{c['kept']:>6}")
        overall = self.report.get("fidelity")
        rows.append(f"overall fidelity: {'-' if overall is None else f'{overall:.3f}'}")
        return "\n".join(rows)


class CacheInitializer:
    """Ask a generator for exactly ``shots`` images per class; optional fidelity filter with refill.

    Args:
        generator: a :class:`CacheGenerator` (or any object with its ``generate`` method).
        class_names: distinct class names (index = label).
        shots: ``K``, images per class (>= 1).
        judge: ``images -> predicted labels``; used for the per-class fidelity report and, with
            ``filter``, to keep only the images whose predicted label is the conditioning label.
        filter: keep only agreeing images and refill until ``K`` per class.
        max_rounds: refill rounds per class before giving up.
        seed: base seed; class ``c``'s round ``r`` uses ``seed + 1000 * c + r``.
        progress: show one step per class (a bar on a terminal, a plain line otherwise; see
            ``LIGHTNING_ADDONS_PROGRESS``).

    Raises:
        ValueError: ``shots < 1``, empty or duplicate class names, ``filter`` without a judge; at run
            time a generator returning the wrong count, shape, dtype or non-finite values.
        RuntimeError: the filter could not collect ``K`` images of a class in ``max_rounds`` rounds.

    Examples:
        >>> import torch
        >>> gen = FewShotGenerator(torch.rand(30, 1, 8, 8), torch.arange(3).repeat(10))
        >>> cs = CacheInitializer(gen, ["a", "b", "c"], shots=4).run()
        >>> tuple(cs.images.shape), cs.labels.bincount().tolist()
        ((12, 1, 8, 8), [4, 4, 4])
    """

    def __init__(
        self,
        generator: CacheGenerator,
        class_names: list[str],
        shots: int,
        judge: Judge | None = None,
        filter: bool = False,
        max_rounds: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        from lightning_addons.modules.nn.cache import validate_class_names

        if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
            raise ValueError(f"`shots` (K, images per class) must be an integer >= 1, got {shots!r}.")
        self.progress = progress
        if filter and judge is None:
            raise ValueError("`filter=True` needs a `judge` (zero-shot CLIP or a reference classifier).")
        if not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"`max_rounds` must be an integer >= 1, got {max_rounds!r}.")
        self.generator, self.class_names = generator, validate_class_names(class_names)
        self.shots, self.judge, self.filter = shots, judge, filter
        self.max_rounds, self.seed = max_rounds, seed

    def _checked(self, images: Any, n: int, name: str, shape: tuple | None) -> torch.Tensor:
        what = getattr(self.generator, "describe", lambda: type(self.generator).__name__)()
        if not isinstance(images, torch.Tensor):
            raise ValueError(
                f"Generator {what} must return a torch.Tensor, got {type(images).__name__} for class {name!r}."
            )
        if images.ndim != 4 or len(images) != n:
            raise ValueError(
                f"Generator {what} must return {n} images [n, C, H, W] for class {name!r}, got shape {tuple(images.shape)}."
            )
        if shape is not None and tuple(images.shape[1:]) != shape:
            raise ValueError(
                f"Generator {what} returned images of shape {tuple(images.shape[1:])} for class {name!r}, "
                f"but earlier images had shape {shape}: every image must have the same [C, H, W]."
            )
        if not images.is_floating_point() or not torch.isfinite(images).all():
            raise ValueError(f"Generator {what} must return finite float images for class {name!r}.")
        return images.float()

    def run(self) -> CacheSet:
        t0 = time.perf_counter()
        images, labels, per_class = [], [], []
        shape: tuple | None = None
        bar = Progress(len(self.class_names), "cache generation", "class", mode=self.progress)
        for c, name in enumerate(self.class_names):
            kept: list[torch.Tensor] = []
            generated = agreed = 0
            for r in range(self.max_rounds):
                need = self.shots - sum(len(k) for k in kept)
                if need <= 0:
                    break
                # ask for a little more than needed when filtering, to refill in few rounds
                n = need if not self.filter or r == 0 else max(need, math.ceil(need * 1.5))
                batch = self._checked(
                    self.generator.generate(c, name, n, self.seed + 1000 * c + r), n, name, shape
                )
                shape = tuple(batch.shape[1:])
                generated += n
                if self.judge is not None:
                    ok = torch.as_tensor(self.judge(batch)).flatten() == c
                    agreed += int(ok.sum())
                    if self.filter:
                        batch = batch[ok]
                kept.append(batch[:need])
                if not self.filter:
                    break
            got = sum(len(k) for k in kept)
            if got < self.shots:
                raise RuntimeError(
                    f"The fidelity filter kept {got} of {generated} generated images of class {name!r} after "
                    f"{self.max_rounds} rounds, fewer than shots={self.shots}: raise `max_rounds` or check the generator."
                )
            images.append(torch.cat(kept)[: self.shots])
            labels.append(torch.full((self.shots,), c, dtype=torch.long))
            per_class.append(
                {
                    "name": name,
                    "generated": generated,
                    "agreed": agreed if self.judge is not None else None,
                    "fidelity": agreed / generated if self.judge is not None else None,
                    "kept": self.shots,
                }
            )
            bar.update(1, postfix={"class": name, "generated": generated})
        bar.close()
        total_gen = sum(p["generated"] for p in per_class)
        fidelity = None
        if self.judge is not None:
            fidelity = sum(p["agreed"] for p in per_class) / total_gen
        report = {
            "generator": getattr(self.generator, "describe", lambda: type(self.generator).__name__)(),
            "shots": self.shots,
            "filtered": self.filter,
            "per_class": per_class,
            "fidelity": fidelity,
            "generated": total_gen,
            "seconds": time.perf_counter() - t0,
        }
        return CacheSet(torch.cat(images), torch.cat(labels), report)


# ---------------------------------------------------------------------------------------------- datamodule
GENERATORS = ("tiny-unet", "real:public", "real:train")


class SyntheticCacheDataModule(pl.LightningDataModule):
    """A downstream datamodule plus a class-balanced cache set from a generator; serves cached features.

    Splits (train/val/test) come from ``datamodule`` (default: ``DigitsDataModule(public_fraction=0.3,
    normalize=False, corruptions={"domain_shift": True})``, the embedded world's private data). The cache
    set has exactly ``shots`` images per class from ``generator``:

    * ``"tiny-unet"`` -- the embedded class-conditional UNet (trained on the public split);
    * ``"diffusers:PATH_OR_ID"`` -- a diffusers text-to-image pipeline (Stable Diffusion from a local
      folder), prompt ``"a photo of a {}."``; or pass a :class:`DiffusersPipelineGenerator`;
    * ``"real:public"`` / ``"real:train"`` -- a real few-shot set from that split;
    * any :class:`CacheGenerator` instance.

    When a :class:`~lightning_addons.modules.CacheCLIPAdapter` attaches its frozen encoder (it does so
    in its ``setup``), every split is encoded once and loaders yield ``(features, labels)``.

    Args:
        datamodule: the downstream datamodule (must expose ``dataset(split)`` with ``.x``/``.y``, or
            ``train/val/test_dataloader`` yielding ``(x, y, ...)``).
        generator: see above.
        class_names: class names (default: the digit names); index = label.
        shots: ``K`` images per class.
        fidelity_judge: ``"reference"`` (logistic regression on the downstream ``public`` split),
            ``"zero-shot"`` (the attached CLIP's zero-shot prediction) or ``"none"``.
        fidelity_filter: keep only images the judge agrees with (refilling until ``K`` per class).
        max_rounds: refill rounds per class.
        batch_size: batch size of the feature loaders.
        seed: generation seed.
        progress: show cache generation one class at a time (a bar on a terminal, a plain line otherwise).

    Raises:
        ValueError: ``shots < 1``, unknown generator string, duplicate/empty class names, a filter
            without a judge.

    Examples:
        >>> dm = SyntheticCacheDataModule(generator="real:public", shots=2)
        >>> cs = dm.cache_set()
        >>> tuple(cs[0].shape), cs[1].bincount().tolist()
        ((20, 1, 8, 8), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """

    def __init__(
        self,
        datamodule: pl.LightningDataModule | None = None,
        generator: str | CacheGenerator = "tiny-unet",
        class_names: list[str] | None = None,
        shots: int = 16,
        fidelity_judge: Literal["reference", "zero-shot", "none"] = "reference",
        fidelity_filter: bool = False,
        max_rounds: int = 10,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__()
        from lightning_addons.modules.nn.cache import validate_class_names

        self.progress = progress
        if class_names is None:
            class_names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        self.class_names = validate_class_names(class_names)
        if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
            raise ValueError(f"`shots` (K, images per class) must be an integer >= 1, got {shots!r}.")
        if isinstance(generator, str) and not (generator in GENERATORS or generator.startswith("diffusers:")):
            raise ValueError(
                f"`generator` must be one of {list(GENERATORS)}, 'diffusers:PATH_OR_ID' or a CacheGenerator, got {generator!r}."
            )
        if not isinstance(generator, str) and not callable(getattr(generator, "generate", None)):
            raise ValueError(
                f"`generator` must be one of {list(GENERATORS)}, 'diffusers:PATH_OR_ID' or a CacheGenerator "
                f"(an object with `generate(class_index, class_name, n, seed)`), got {type(generator).__name__}."
            )
        self._diffusers: DiffusersPipelineGenerator | None = None
        if isinstance(generator, str) and generator.startswith("diffusers:"):
            try:  # checks the folder now (nothing is loaded before the cache set is built)
                self._diffusers = DiffusersPipelineGenerator(generator[len("diffusers:") :])
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(
                    f"`generator` {generator!r} names no usable diffusers pipeline "
                    f"('diffusers:' followed by a local folder or a hub id): {err}"
                ) from err
        if fidelity_judge not in ("reference", "zero-shot", "none"):
            raise ValueError(
                f"`fidelity_judge` must be one of ['reference', 'zero-shot', 'none'], got {fidelity_judge!r}."
            )
        if fidelity_filter and fidelity_judge == "none":
            raise ValueError(
                "`fidelity_filter=True` needs `fidelity_judge` 'reference' or 'zero-shot', got 'none'."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if datamodule is None:
            from lightning_addons.datamodules.digits import DigitsDataModule

            datamodule = DigitsDataModule(
                public_fraction=0.3, normalize=False, channels=1, corruptions={"domain_shift": True}, seed=0
            )
        self.datamodule = datamodule
        self.generator = generator
        self.shots, self.fidelity_judge, self.fidelity_filter = shots, fidelity_judge, fidelity_filter
        self.max_rounds, self.batch_size, self.seed = max_rounds, batch_size, seed
        self.save_hyperparameters(ignore=["datamodule", "generator"])
        self._encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._fingerprint: str | None = None
        self._zero_shot: Judge | None = None
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache: CacheSet | None = None
        #: number of images passed through the attached encoder, per split (features are cached once)
        self.encoded: dict[str, int] = {}

    # ------------------------------------------------------------------ encoder
    def attach_encoder(
        self,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        fingerprint: str,
        zero_shot: Judge | None = None,
    ) -> None:
        """Serve features from ``encoder`` (cached per split; a new ``fingerprint`` clears the cache)."""
        if fingerprint != self._fingerprint:
            self._features.clear()
        self._encoder, self._fingerprint, self._zero_shot = encoder, fingerprint, zero_shot

    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.datamodule.setup(stage)

    def split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of a downstream split."""
        if hasattr(self.datamodule, "dataset"):
            ds = self.datamodule.dataset(split)
            return ds.x, ds.y
        loader = getattr(self.datamodule, f"{split}_dataloader")()
        xs, ys = zip(*[(b[0], b[1]) for b in loader])
        return torch.cat(xs), torch.cat(ys)

    def split_features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a split through the attached encoder, computed once and cached."""
        if self._encoder is None:
            raise RuntimeError(
                "No encoder attached: call `attach_encoder` (CacheCLIPAdapter does it in setup)."
            )
        if split not in self._features:
            x, y = self.split_tensors(split)
            with torch.no_grad():
                feats = self._encoder(x).detach().cpu()
            self.encoded[split] = self.encoded.get(split, 0) + len(x)
            self._features[split] = (feats, y.clone())
        return self._features[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self._encoder is None:
            x, y = self.split_tensors(split)
        else:
            x, y = self.split_features(split)
        g = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=shuffle, generator=g)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------------------ cache set
    def _make_generator(self) -> CacheGenerator:
        gen = self.generator
        if not isinstance(gen, str):
            return gen
        if gen == "tiny-unet":
            return TinyUNetGenerator()
        if gen.startswith("diffusers:"):
            return self._diffusers
        split = gen.split(":", 1)[1]
        x, y = self.split_tensors(split)
        return FewShotGenerator(x, y)

    def _make_judge(self) -> Judge | None:
        if self.fidelity_judge == "none":
            return None
        if self.fidelity_judge == "zero-shot":
            if self._zero_shot is None:
                raise RuntimeError(
                    "`fidelity_judge='zero-shot'` needs the CLIP model: attach it (CacheCLIPAdapter.setup)."
                )
            return self._zero_shot
        x, y = self.split_tensors("public")
        return ReferenceClassifierJudge(x, y)

    def build_cache_set(self) -> CacheSet:
        """Generate (once) and return the class-balanced cache set with its fidelity report."""
        if self._cache is None:
            self.datamodule.setup("fit")
            init = CacheInitializer(
                self._make_generator(),
                self.class_names,
                self.shots,
                judge=self._make_judge(),
                filter=self.fidelity_filter,
                max_rounds=self.max_rounds,
                seed=self.seed,
                progress=self.progress,
            )
            self._cache = init.run()
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(
                f"[SyntheticCacheDataModule] cache set from {self._cache.report['generator']}:\n"
                + self._cache.fidelity_table()
            )
        return self._cache

    def cache_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N*K, C, H, W], labels [N*K])`` -- what CacheCLIPAdapter builds its keys from."""
        cs = self.build_cache_set()
        return cs.images, cs.labels

    @property
    def fidelity_report(self) -> dict[str, Any]:
        return self.build_cache_set().report
