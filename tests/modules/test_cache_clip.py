"""CacheCLIPAdapter: exactness of the cache maths, the federated contract, feature caching, the
validation-only alpha/beta search, the embedded-world acceptance figures and bad-input errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip")
pytest.importorskip("diffusers")

import lightning.pytorch as pl  # noqa: E402

from lightning_addons.datamodules import (  # noqa: E402
    CacheInitializer,
    FewShotGenerator,
    SyntheticCacheDataModule,
)
from lightning_addons.modules import CacheCLIPAdapter  # noqa: E402

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _trainer(epochs: int = 2, **kw) -> pl.Trainer:
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kw,
    )


@pytest.fixture(scope="session")
def tiny_world():
    """The embedded world, resolved once per session: shipped weights (or cached/built) of CLIP and UNet."""
    from lightning_addons.zoo import tiny_clip_weights, tiny_unet_weights

    return {"clip": tiny_clip_weights(), "unet": tiny_unet_weights()}


@pytest.fixture(scope="session")
def real_cache_dm(tiny_world):
    """Downstream digits + a real few-shot cache from the public split (fast: no sampling)."""
    dm = SyntheticCacheDataModule(generator="real:public", shots=4, fidelity_judge="none")
    dm.cache_set()
    return dm


def _fresh_dm(base: SyntheticCacheDataModule, **kw) -> SyntheticCacheDataModule:
    """A new datamodule sharing ``base``'s downstream data and cache set (so nothing is regenerated)."""
    dm = SyntheticCacheDataModule(
        datamodule=base.datamodule, generator="real:public", shots=base.shots, fidelity_judge="none", **kw
    )
    dm._cache = base.build_cache_set()
    return dm


# ------------------------------------------------------------------ exactness
def test_alpha_zero_reproduces_zero_shot_logits_and_open_clip(tiny_world):
    import torch.nn.functional as F

    module = CacheCLIPAdapter(class_names=DIGITS, templates=['a photo of the number: "{}".'], alpha=0.0)
    images = torch.rand(12, 1, 8, 8)
    module.build_cache(images, torch.arange(10).repeat(2)[:12])
    f = module.features(images)
    assert torch.equal(module.logits_from_features(f), module.zero_shot_logits(f))
    # with one template, zero-shot logits are open_clip's own CLIP logits
    model, tok = module.clip, module._clip["tokenizer"]
    with torch.no_grad():
        img = F.normalize(model.encode_image(module.preprocess(images)), dim=-1)
        txt = F.normalize(model.encode_text(tok([f'a photo of the number: "{c}".' for c in DIGITS])), dim=-1)
        ref = model.logit_scale.exp() * img @ txt.T
    torch.testing.assert_close(module(images), ref, rtol=1e-5, atol=1e-5)
    # and a non-zero alpha does change them
    assert not torch.allclose(module.logits_from_features(f, alpha=1.0), module.zero_shot_logits(f))


def test_cache_maths_matches_explicit_formula(tiny_world):
    module = CacheCLIPAdapter(class_names=DIGITS[:4], alpha=2.0, beta=3.0)
    images = torch.rand(8, 1, 8, 8)
    module.build_cache(images, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    f = module.features(torch.rand(5, 1, 8, 8))
    keys, values = module.cache_keys.detach(), module.cache_values
    expected = (
        module.logit_scale * f @ module.text_weights.T + 2.0 * torch.exp(-3.0 * (1 - f @ keys.T)) @ values
    )
    torch.testing.assert_close(module.logits_from_features(f), expected)
    assert values.sum(1).eq(1).all() and module.shots_per_class == [2, 2, 2, 2]


def test_values_clip_and_text_weights_never_change_while_keys_train(real_cache_dm):
    dm = _fresh_dm(real_cache_dm)
    module = CacheCLIPAdapter(lr=1e-2)
    trainer = _trainer(3)
    module_setup_values = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            module_setup_values["values"] = pl_module.cache_values.clone()
            module_setup_values["text"] = pl_module.text_weights.clone()
            module_setup_values["keys"] = pl_module.cache_keys.detach().clone()
            module_setup_values["clip"] = {k: v.clone() for k, v in pl_module.clip.state_dict().items()}

    trainer.callbacks.append(Snapshot())
    trainer.fit(module, dm)
    assert torch.equal(module.cache_values, module_setup_values["values"])  # bit-identical
    assert torch.equal(module.text_weights, module_setup_values["text"])
    assert not torch.equal(module.cache_keys.detach(), module_setup_values["keys"])  # the keys did train
    assert torch.equal(module.initial_keys, module_setup_values["keys"])
    for k, v in module.clip.state_dict().items():
        assert torch.equal(v, module_setup_values["clip"][k]), k
    assert all(not p.requires_grad for p in module.clip.parameters())
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["cache_keys"]


def test_features_are_computed_once_per_split(real_cache_dm):
    dm = _fresh_dm(real_cache_dm)
    module = CacheCLIPAdapter()
    model = module.clip
    calls = {"images": 0}
    original = model.encode_image

    def counting(x, *a, **k):
        calls["images"] += len(x)
        return original(x, *a, **k)

    model.encode_image = counting
    trainer = _trainer(4)
    trainer.fit(module, dm)
    trainer.validate(module, dm, verbose=False)
    trainer.test(module, dm, verbose=False)
    sizes = {s: len(dm.datamodule.dataset(s)) for s in ("train", "val", "test")}
    assert dm.encoded == sizes
    # every image of every split once, plus each cache image once per augmented view
    assert calls["images"] == sum(sizes.values()) + module.hparams.augment_views * len(module.cache_keys)
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (dm.batch_size, 64)  # loaders serve features


# ------------------------------------------------------------------ federated contract
def test_federated_state_dict_holds_only_the_keys(tiny_world):
    module = CacheCLIPAdapter()
    gen = FewShotGenerator(torch.rand(50, 1, 8, 8), torch.arange(10).repeat(5))
    cs = CacheInitializer(gen, DIGITS, shots=3).run()
    module.build_cache(cs.images, cs.labels)
    state = module.federated_state_dict()
    assert list(state) == ["cache_keys"]
    assert sum(v.numel() for v in state.values()) == 10 * 3 * 64  # N * K * C floats
    assert state["cache_keys"].dtype == torch.float32
    # round trip, in place (the optimiser's parameter object stays the same)
    param = module.cache_keys
    new = {"cache_keys": torch.randn(30, 64)}
    module.load_federated_state_dict(new)
    assert module.cache_keys is param and torch.equal(module.cache_keys.detach(), new["cache_keys"])
    state["cache_keys"][0, 0] = 123.0  # a copy: mutating it does not touch the module
    assert module.cache_keys[0, 0] != 123.0


def test_federated_state_includes_alpha_beta_when_trainable(tiny_world):
    module = CacheCLIPAdapter(class_names=DIGITS[:2], train_alpha_beta=True, train_keys=False)
    module.build_cache(torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))
    state = module.federated_state_dict()
    assert sorted(state) == ["alpha", "beta", "cache_keys"]
    assert sorted(n for n, p in module.named_parameters() if p.requires_grad) == ["alpha", "beta"]


def test_load_federated_state_rejects_bad_updates(tiny_world):
    module = CacheCLIPAdapter(class_names=DIGITS[:2])
    module.build_cache(torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))
    before = module.cache_keys.detach().clone()
    with pytest.raises(ValueError, match=r"shape \(4, 64\).*got \(4, 32\)"):
        module.load_federated_state_dict({"cache_keys": torch.zeros(4, 32)})
    with pytest.raises(ValueError, match="non-finite"):
        module.load_federated_state_dict({"cache_keys": torch.full((4, 64), float("nan"))})
    with pytest.raises(ValueError, match=r"missing \['cache_keys'\].*unexpected \['weights'\]"):
        module.load_federated_state_dict({"weights": torch.zeros(4, 64)})
    assert torch.equal(module.cache_keys.detach(), before)  # nothing was loaded


# ------------------------------------------------------------------ alpha / beta search
def test_grid_search_uses_validation_data_only(real_cache_dm):
    class NoPeekingAtTest(SyntheticCacheDataModule):
        def split_tensors(self, split):
            if split == "test" and self.trainer.state.fn != "test":
                raise AssertionError("test data requested outside trainer.test")
            return super().split_tensors(split)

        def test_dataloader(self):
            if self.trainer.state.fn != "test":
                raise AssertionError("test loader requested outside trainer.test")
            return super().test_dataloader()

    dm = NoPeekingAtTest(
        datamodule=real_cache_dm.datamodule, generator="real:public", shots=4, fidelity_judge="none"
    )
    dm._cache = real_cache_dm.build_cache_set()
    module = CacheCLIPAdapter(train_keys=False, train_alpha_beta=True)  # something trainable, keys fixed
    trainer = _trainer(1)
    trainer.fit(module, dm)
    found = module.last_search
    assert "test" not in dm.encoded
    # the result is what searching the validation loader alone gives
    fresh = CacheCLIPAdapter(train_keys=False, train_alpha_beta=True)
    fresh.set_cache(module.cache_keys.detach(), module.cache_labels)
    direct = fresh.search_alpha_beta(dm.val_dataloader())
    assert direct == found
    assert float(module.alpha.detach()) == found["alpha"] and float(module.beta.detach()) == found["beta"]
    trainer.test(module, dm, verbose=False)  # allowed now
    assert "test" in dm.encoded


def test_training_free_mode_needs_no_fit(real_cache_dm):
    dm = _fresh_dm(real_cache_dm)
    module = CacheCLIPAdapter()
    res = _trainer().test(module, dm, verbose=False)[0]
    assert module.last_search  # searched on validation before testing
    assert res["test_acc"] == res["test_acc_training_free"]
    assert torch.equal(module.cache_keys.detach(), module.initial_keys)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_restores_cache_and_loads_weights_only(real_cache_dm, tmp_path):
    dm = _fresh_dm(real_cache_dm)
    module = CacheCLIPAdapter()
    trainer = _trainer(2)
    trainer.fit(module, dm)
    path = tmp_path / "cache.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert not any(k.startswith("clip") or "visual" in k for k in ckpt["state_dict"])  # CLIP is not saved
    restored = CacheCLIPAdapter.load_from_checkpoint(path)
    x = dm.split_features("test")[0][:16]
    torch.testing.assert_close(restored.logits_from_features(x), module.logits_from_features(x))
    assert torch.equal(restored.cache_values, module.cache_values)


# ------------------------------------------------------------------ acceptance on the embedded world
@pytest.mark.stochastic
def test_embedded_world_synthetic_cache_beats_zero_shot(tiny_world, seed_offset):
    """Issue 4 acceptance: training-free >= zero-shot + 1 pt, fine-tuned >= zero-shot + 3 pt,
    exactly K generated images per class, generator fidelity >= 0.85 (seed 0 + offset, K=16, 20 epochs)."""
    pl.seed_everything(seed_offset, verbose=False)
    dm = SyntheticCacheDataModule(generator="tiny-unet", shots=16, fidelity_filter=True, seed=seed_offset)
    module = CacheCLIPAdapter(seed=seed_offset)
    trainer = _trainer(20)
    trainer.fit(module, dm)
    res = trainer.test(module, dm, verbose=False)[0]
    report = dm.fidelity_report
    assert module.shots_per_class == [16] * 10
    assert [c["kept"] for c in report["per_class"]] == [16] * 10
    assert report["fidelity"] >= 0.85, report
    assert res["test_acc_training_free"] >= res["test_acc_zero_shot"] + 0.01, res
    assert res["test_acc"] >= res["test_acc_zero_shot"] + 0.03, res


# ------------------------------------------------------------------ the real path (no download)
def test_real_path_builds_random_vit_b32_from_builtin_config():
    module = CacheCLIPAdapter(
        class_names=["cat", "dog", "bird"],
        clip_model="ViT-B-32",
        pretrained=None,
        templates="imagenet7",
        augment_views=1,
    )
    assert module.feature_dim == 512 and module.clip.visual.image_size == (224, 224)
    module.build_cache(torch.rand(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert module(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert module.federated_state_dict()["cache_keys"].numel() == 3 * 2 * 512
    with pytest.raises(ValueError, match="dimension 64 but 'ViT-B-32' produces 512-d"):
        module(torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"\[M, 512\].*different CLIP"):
        module.set_cache(torch.randn(6, 64), torch.tensor([0, 0, 1, 1, 2, 2]))
    # the LAION tag is accepted without downloading anything (validation only)
    CacheCLIPAdapter(class_names=["cat", "dog"], clip_model="ViT-B/32", pretrained="laion2b_s34b_b79k")


def test_factory_reference_builds_the_clip_model(tiny_world):
    module = CacheCLIPAdapter(
        class_names=DIGITS[:3], clip_model="lightning_addons.zoo:tiny_clip", pretrained=None
    )
    assert module.feature_dim == 64


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_names": []}, ValueError, "at least 2 classes"),
        ({"class_names": ["cat", "dog", "cat"]}, ValueError, r"distinct; duplicated: \['cat'\]"),
        ({"class_names": ["cat", " "]}, ValueError, "non-empty strings"),
        (
            {"clip_model": "ViT-B-23"},
            ValueError,
            r"not an open_clip model name\. Close matches: \['ViT-B-32'",
        ),
        (
            {"clip_model": "ViT-B-32", "pretrained": "/no/such/ckpt.pt"},
            FileNotFoundError,
            "ckpt.pt' does not exist",
        ),
        (
            {"clip_model": "ViT-B-32", "pretrained": "laion9000"},
            ValueError,
            "known tags: .*laion2b_s34b_b79k",
        ),
        ({"clip_model": "local-dir:/no/such/folder"}, FileNotFoundError, "holds no open_clip_config.json"),
        ({"templates": "fancy"}, ValueError, r"built-in sets \['digits', 'imagenet7', 'simple'\]"),
        ({"templates": ["no placeholder"]}, ValueError, "exactly one"),
        ({"augment_views": 0}, ValueError, "augment_views"),
        ({"lr": 0}, ValueError, "`lr` must be > 0"),
        ({"alpha_grid": []}, ValueError, "alpha_grid"),
    ],
)
def test_adapter_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CacheCLIPAdapter(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shots": 0}, r"`shots` \(K, images per class\) must be an integer >= 1, got 0"),
        ({"class_names": ["a", "a"]}, "duplicated"),
        ({"generator": "stable-diffusion"}, "`generator` must be one of"),
        ({"fidelity_filter": True, "fidelity_judge": "none"}, "needs `fidelity_judge`"),
    ],
)
def test_cache_datamodule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticCacheDataModule(**kwargs)


class _BadGenerator:
    def __init__(self, out):
        self.out = out

    def generate(self, class_index, class_name, n, seed):
        return self.out(n)


@pytest.mark.parametrize(
    ("out", "match"),
    [
        (
            lambda n: torch.rand(n + 1, 1, 8, 8),
            r"must return 3 images \[n, C, H, W\] for class 'a', got shape \(4, 1, 8, 8\)",
        ),
        (lambda n: torch.rand(n, 8, 8), r"got shape \(3, 8, 8\)"),
        (lambda n: torch.full((n, 1, 8, 8), float("nan")), "finite float images"),
        (lambda n: [1, 2, 3], "must return a torch.Tensor"),
    ],
)
def test_initializer_rejects_a_generator_returning_wrong_count_or_shape(out, match):
    with pytest.raises(ValueError, match=match):
        CacheInitializer(_BadGenerator(out), ["a", "b"], shots=3).run()


def test_initializer_rejects_inconsistent_image_shapes_and_bad_k():
    sizes = iter([8, 16])
    gen = _BadGenerator(lambda n: torch.rand(n, 1, next(sizes), 8))
    with pytest.raises(
        ValueError, match=r"shape \(1, 16, 8\) for class 'b'.*earlier images had shape \(1, 8, 8\)"
    ):
        CacheInitializer(gen, ["a", "b"], shots=2).run()
    with pytest.raises(ValueError, match="`shots`"):
        CacheInitializer(gen, ["a", "b"], shots=0)
    with pytest.raises(ValueError, match="needs a `judge`"):
        CacheInitializer(gen, ["a", "b"], shots=1, filter=True)


def test_fidelity_filter_refills_to_exactly_k_and_reports_per_class():
    gen = FewShotGenerator(torch.rand(60, 1, 4, 4), torch.arange(3).repeat(20))

    # a judge that rejects every other image of class 1
    def judge(images):
        pred = torch.full((len(images),), -1)
        return pred

    calls = {"n": 0}

    def half_judge(images):
        calls["n"] += 1
        cls = int(judge_state["cls"])
        out = torch.full((len(images),), cls)
        if cls == 1:
            out[::2] = 0
        return out

    judge_state = {"cls": 0}

    class Tracking(FewShotGenerator):
        def generate(self, class_index, class_name, n, seed):
            judge_state["cls"] = class_index
            return super().generate(class_index, class_name, n, seed)

    gen = Tracking(gen.images, gen.labels)
    cs = CacheInitializer(gen, ["a", "b", "c"], shots=4, judge=half_judge, filter=True).run()
    assert cs.labels.bincount().tolist() == [4, 4, 4]
    per = {c["name"]: c for c in cs.report["per_class"]}
    assert per["a"]["fidelity"] == 1.0 and per["b"]["fidelity"] == pytest.approx(0.5, abs=0.15)
    assert per["b"]["generated"] > 4 and "fidelity" in cs.fidelity_table()
    with pytest.raises(RuntimeError, match="fidelity filter kept 0 of .* class 'a'"):
        CacheInitializer(gen, ["a", "b", "c"], shots=1, judge=judge, filter=True, max_rounds=2).run()


def test_few_shot_generator_names_the_short_class():
    gen = FewShotGenerator(torch.rand(5, 1, 4, 4), torch.tensor([0, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"holds 2 images of class 'b' \(index 1\); 3 were requested"):
        CacheInitializer(gen, ["a", "b"], shots=3).run()


def test_cli_fit_on_the_example_config_prints_the_accuracy_table(tiny_world, caplog, tmp_path):
    import logging
    from pathlib import Path

    from lightning_addons.cli import cli_main

    config = Path(__file__).resolve().parents[2] / "examples" / "configs" / "cache_clip_digits.yaml"
    with caplog.at_level(logging.INFO):
        cli = cli_main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.max_epochs=2",
                "--data.init_args.shots=4",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    text = caplog.text
    for row in ("zero-shot CLIP", "training-free cache", "fine-tuned cache", "overall fidelity"):
        assert row in text, text[-2000:]
    assert isinstance(cli.model, CacheCLIPAdapter) and cli.model.shots_per_class == [4] * 10
    assert set(cli.trainer.callback_metrics) >= {"test_acc", "test_acc_zero_shot", "test_acc_training_free"}


def test_diffusers_pipeline_generator_adapts_pipeline_output():
    """The text-to-image adapter (with a stand-in for a pipeline: no Stable Diffusion weights exist here):
    one prompt per class, seeded, NHWC -> NCHW, grayscale and resize handled, count checked downstream."""
    from types import SimpleNamespace

    from lightning_addons.datamodules import DiffusersPipelineGenerator

    calls = []

    def fake_pipeline(prompt, num_images_per_prompt, generator, output_type, **kwargs):
        calls.append((prompt, num_images_per_prompt, output_type, kwargs))
        g = torch.Generator().manual_seed(generator.initial_seed())
        return SimpleNamespace(images=torch.rand(num_images_per_prompt, 32, 32, 3, generator=g))  # NHWC

    gen = DiffusersPipelineGenerator(fake_pipeline, output_size=8, grayscale=True, num_inference_steps=3)
    cs = CacheInitializer(gen, ["cat", "dog"], shots=2, seed=7).run()
    assert tuple(cs.images.shape) == (4, 1, 8, 8) and cs.labels.tolist() == [0, 0, 1, 1]
    assert [c[0] for c in calls] == ["a photo of a cat.", "a photo of a dog."]
    assert calls[0][2] == "pt" and calls[0][3]["num_inference_steps"] == 3
    again = CacheInitializer(gen, ["cat", "dog"], shots=2, seed=7).run()
    assert torch.equal(again.images, cs.images)  # fixed seeds
    with pytest.raises(FileNotFoundError, match="`pipeline` folder '/no/such/sd' does not exist"):
        DiffusersPipelineGenerator("/no/such/sd")
    with pytest.raises(ValueError, match="exactly one"):
        DiffusersPipelineGenerator(fake_pipeline, prompt="no placeholder")


@pytest.mark.stochastic
def test_zero_shot_clip_can_judge_fidelity(real_cache_dm, seed_offset):
    dm = SyntheticCacheDataModule(
        datamodule=real_cache_dm.datamodule,
        generator="real:public",
        shots=2,
        fidelity_judge="zero-shot",
        fidelity_filter=True,
        seed=seed_offset,
    )
    with pytest.raises(RuntimeError, match="needs the CLIP model"):
        dm.cache_set()  # no adapter attached yet
    module = CacheCLIPAdapter(augment_views=1)
    _trainer().validate(module, dm, verbose=False)  # setup attaches the encoder and builds the cache
    report = dm.fidelity_report
    assert module.shots_per_class == [2] * 10
    assert 0.5 < report["fidelity"] <= 1.0  # the tiny CLIP agrees with most real public digits
    x, y = dm.cache_set()
    assert torch.equal(module._zero_shot_predict(x), y)  # the filter kept only agreeing images


def test_local_dir_folder_and_local_checkpoint_load_through_open_clip(tiny_world, tmp_path):
    """The real path's local loaders (open_clip's own): a `local-dir:` folder and a checkpoint file path."""
    import json

    from lightning_addons.zoo import tiny_clip
    from lightning_addons.zoo.tinyclip import CONFIG_PATH

    model, _ = tiny_clip()
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": json.loads(CONFIG_PATH.read_text())})
    )
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    reference = CacheCLIPAdapter(class_names=DIGITS[:3])
    x = torch.rand(4, 1, 8, 8)
    for kwargs in (
        {"clip_model": f"local-dir:{tmp_path}"},
        {"clip_model": "tiny-digits-clip", "pretrained": str(tmp_path / "open_clip_pytorch_model.bin")},
    ):
        module = CacheCLIPAdapter(class_names=DIGITS[:3], **kwargs)
        torch.testing.assert_close(module.encode_images(x), reference.encode_images(x))
        torch.testing.assert_close(module.text_weights, reference.text_weights)
