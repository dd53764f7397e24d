"""The real text-to-image path, offline: a diffusers ``StableDiffusionPipeline`` assembled from tiny randomly
initialised components (transformers' CLIP text model and a CLIP tokenizer whose vocabulary and merges files
the test writes, ``UNet2DConditionModel``, ``AutoencoderKL``, a DDIM scheduler; no safety checker), saved to
a local folder and driven by ``DiffusersPipelineGenerator`` through prompts -> images -> fidelity filter ->
cache set -> CLIP cache keys. The code users run with Stable Diffusion weights is the code tested here."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from lightning_addons.datamodules import (  # noqa: E402
    CacheInitializer,
    DiffusersPipelineGenerator,
    SyntheticCacheDataModule,
)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
WORDS = ["a", "photo", "of", "the", "number", *DIGITS]


def _write_clip_vocabulary(folder) -> None:
    """A byte-pair vocabulary in CLIP's format: every letter (inner and word-final ``</w>``), and merges that
    build each prompt word left to right, so every prompt word encodes to a single token."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz.":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = []
    for word in WORDS:
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            if f"{left} {right}" not in merges:
                merges.append(f"{left} {right}")
            left = left + right
            vocab.setdefault(left, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    """A saved ``StableDiffusionPipeline`` of tiny random components (16x16 images, 8x8 latents)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    (root / "vocab").mkdir()
    _write_clip_vocabulary(root / "vocab")
    tokenizer = CLIPTokenizer(
        str(root / "vocab" / "vocab.json"), str(root / "vocab" / "merges.txt"), model_max_length=77
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=32,
        sample_size=16,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = root / "pipeline"
    pipe.save_pretrained(str(folder))
    return folder


def test_written_vocabulary_encodes_each_prompt_word_as_one_token(tiny_sd_folder):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tiny_sd_folder / "tokenizer"), local_files_only=True)
    tokens = tok.convert_ids_to_tokens(tok("a photo of a seven.").input_ids)
    assert tokens == [
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "seven</w>",
        ".</w>",
        "<|endoftext|>",
    ]


class BrightnessJudge:
    """Predicts class 1 for images brighter than their batch's lower median, else class 0 (a stand-in for
    zero-shot CLIP: deterministic, so the filter's keep/refill arithmetic is known exactly). Records what
    it judged."""

    def __init__(self) -> None:
        self.judged: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean((1, 2, 3))
        predicted = (brightness > brightness.median()).long()
        self.judged.append((images.clone(), predicted))
        return predicted


def test_real_stable_diffusion_pipeline_fills_a_filtered_cache_offline(tiny_sd_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = DiffusersPipelineGenerator(
        str(tiny_sd_folder), num_inference_steps=2, output_size=8, grayscale=True
    )
    judge = BrightnessJudge()
    cs = CacheInitializer(gen, ["zero", "one"], shots=3, judge=judge, filter=True, seed=5).run()

    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    assert type(gen._pipe) is StableDiffusionPipeline and isinstance(gen._pipe.text_encoder, CLIPTextModel)
    assert tuple(cs.images.shape) == (6, 1, 8, 8) and cs.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert cs.images.min() >= 0 and cs.images.max() <= 1
    # refill arithmetic of the filter: with n images, the judge agrees with class 0 on ceil(n/2) and
    # with class 1 on floor(n/2); class 0: 3 (2 kept) + 2 (1 kept); class 1: 3 (1) + 3 (1) + 2 (1)
    assert [c["generated"] for c in cs.report["per_class"]] == [5, 8]
    assert [c["agreed"] for c in cs.report["per_class"]] == [3, 3]
    assert cs.report["fidelity"] == pytest.approx(6 / 13)
    # every kept image is one the judge agreed with for its class, and no image is kept twice
    agreed = {
        c: [img for batch, pred in judge.judged for img, p in zip(batch, pred) if p == c] for c in (0, 1)
    }
    for img, label in zip(cs.images, cs.labels):
        assert any(torch.equal(img, a) for a in agreed[int(label)])
    assert len({tuple(img.flatten().tolist()) for img in cs.images}) == 6
    # seeded: the same cache again; the prompt conditions the images (same seed, other class name)
    again = CacheInitializer(
        gen, ["zero", "one"], shots=3, judge=BrightnessJudge(), filter=True, seed=5
    ).run()
    assert torch.equal(again.images, cs.images)
    assert not torch.equal(gen.generate(0, "zero", 2, seed=11), gen.generate(0, "one", 2, seed=11))
    assert gen.nsfw_flagged == 0


def test_diffusers_generator_string_builds_a_cache_set_and_clip_cache_keys(tiny_sd_folder, monkeypatch):
    """``generator="diffusers:FOLDER"``: the datamodule's own route (default pipeline settings: 25 steps,
    guidance 7.5), the reference-classifier fidelity report, then the CLIP cache built from the set."""
    pytest.importorskip("open_clip")
    import torch.nn.functional as F

    from lightning_addons.modules import CacheCLIPAdapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dm = SyntheticCacheDataModule(
        generator=f"diffusers:{tiny_sd_folder}", class_names=DIGITS[:2], shots=1, fidelity_judge="reference"
    )
    images, labels = dm.cache_set()
    assert tuple(images.shape) == (2, 3, 16, 16) and labels.tolist() == [0, 1]
    report = dm.fidelity_report
    assert report["generated"] == 2 and 0 <= report["fidelity"] <= 1
    assert report["generator"].startswith(f"diffusers pipeline {str(tiny_sd_folder)!r}")

    module = CacheCLIPAdapter(class_names=DIGITS, augment_views=1)
    module.build_cache(images, labels)
    assert module.shots_per_class == [1, 1] + [0] * 8
    torch.testing.assert_close(module.cache_keys.detach(), F.normalize(module.encode_images(images), dim=-1))


def test_bad_generator_strings_fail_early_with_the_argument_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"`generator` must be one of .*'diffusers:PATH_OR_ID'.*got 'diffusion:x'"
    ):
        SyntheticCacheDataModule(generator="diffusion:x")
    with pytest.raises(
        ValueError, match=r"`generator` 'diffusers:' names no usable diffusers pipeline.*empty string"
    ):
        SyntheticCacheDataModule(generator="diffusers:")
    with pytest.raises(
        FileNotFoundError, match=r"`generator` 'diffusers:/no/such/sd'.*folder '/no/such/sd' does not exist"
    ):
        SyntheticCacheDataModule(generator="diffusers:/no/such/sd")
    with pytest.raises(ValueError, match=r"`generator` must be .*a CacheGenerator.*got int"):
        SyntheticCacheDataModule(generator=3)
    with pytest.raises(ValueError, match=r"`pipeline` must be .*callable pipeline object, got int"):
        DiffusersPipelineGenerator(3)
    with pytest.raises(ValueError, match=r"`num_inference_steps` must be an integer >= 1, got 0"):
        DiffusersPipelineGenerator("some/hub-id", num_inference_steps=0)
    with pytest.raises(ValueError, match=r"`output_size` must be None or an integer >= 1, got -8"):
        DiffusersPipelineGenerator("some/hub-id", output_size=-8)
    with pytest.raises(
        ValueError, match=r"`torch_dtype` must be one of \['float32', 'float16', 'bfloat16'\], got 'half'"
    ):
        DiffusersPipelineGenerator("some/hub-id", torch_dtype="half")
    with pytest.raises(ValueError, match=r"`guidance_scale` must be a number >= 0, got -1"):
        DiffusersPipelineGenerator("some/hub-id", guidance_scale=-1)


def test_unloadable_pipelines_name_the_value_at_first_use(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_a_pipeline = tmp_path / "empty"
    not_a_pipeline.mkdir()
    gen = DiffusersPipelineGenerator(str(not_a_pipeline))  # exists, so accepted until it is loaded
    with pytest.raises(
        FileNotFoundError, match=r"could not be loaded as a diffusers pipeline.*model_index.json"
    ):
        gen.generate(0, "zero", 1, seed=0)
    uncached = DiffusersPipelineGenerator("nobody-here/no-such-pipeline")
    with pytest.raises(
        FileNotFoundError, match=r"'nobody-here/no-such-pipeline' could not be loaded.*local_files_only=True"
    ):
        uncached.generate(0, "zero", 1, seed=0)
