"""The embedded tiny world: shipped weights (small, offline, trained on the current public split), the
build-once cache fallback, the offline tokenizer and the hand-written DDIM loop against diffusers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")
pytest.importorskip("diffusers")

from lightning_addons import zoo  # noqa: E402
from lightning_addons.zoo import tinyclip as tc  # noqa: E402
from lightning_addons.zoo import tinyunet as tu  # noqa: E402


def test_shipped_weights_are_small_and_match_the_current_public_split():
    for name in (zoo.TINY_CLIP_FILE, zoo.TINY_UNET_FILE):
        path = zoo.WEIGHTS_DIR / name
        assert path.is_file(), f"{path} missing: run python -m lightning_addons.zoo.build"
        assert path.stat().st_size < 3_000_000
        state = torch.load(path, weights_only=True)
        assert torch.equal(state["public_split_sha256"], tc.public_split_fingerprint())


def test_tiny_clip_is_registered_and_its_tokenizer_works_offline(monkeypatch):
    import open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.register_tiny_clip() == "tiny-digits-clip" and "tiny-digits-clip" in open_clip.list_models()
    model, tokenizer = zoo.tiny_clip()
    assert isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer)  # the bundled BPE vocabulary
    tokens = tokenizer([t.format(c) for t in zoo.PRETRAIN_TEMPLATES for c in zoo.DIGIT_CLASS_NAMES])
    used = tokens.unique()
    rows = model.token_embedding.weight.abs().sum(1)
    assert (rows[used[used > 0]] > 0).all()  # every caption token has a trained embedding row
    assert sum(p.numel() for p in model.parameters()) < 4_000_000


def test_tiny_clip_zero_shot_is_good_on_public_and_imperfect_on_shifted_private():
    from lightning_addons.datamodules import DigitsDataModule

    model, tokenizer = zoo.tiny_clip()
    cfg = model.visual.preprocess_cfg
    dm = DigitsDataModule(public_fraction=0.3, normalize=False, corruptions={"domain_shift": True})
    with torch.no_grad():
        text = F.normalize(
            model.encode_text(tokenizer([f'a photo of the number: "{c}".' for c in zoo.DIGIT_CLASS_NAMES])),
            dim=-1,
        )
        accs = {}
        for split in ("public", "test"):
            ds = dm.dataset(split)
            img = F.normalize(
                model.encode_image(tc.preprocess_tensor(ds.x, 16, cfg["mean"], cfg["std"])), dim=-1
            )
            accs[split] = float(((img @ text.T).argmax(1) == ds.y).float().mean())
    assert accs["public"] > 0.95  # pre-training data
    assert 0.6 < accs["test"] < accs["public"] - 0.08  # shifted private data: room for adaptation


def test_weights_fall_back_to_a_build_once_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNING_ADDONS_CACHE", str(tmp_path))
    monkeypatch.setenv("LIGHTNING_ADDONS_ZOO_IGNORE_SHIPPED", "1")
    builds = {"clip": 0, "unet": 0}
    real_clip, real_unet = tc.pretrain_tiny_clip, tu.train_tiny_unet

    def short_clip(**kw):
        builds["clip"] += 1
        return real_clip(epochs=1, verbose=False)

    def short_unet(**kw):
        builds["unet"] += 1
        return real_unet(steps=2, batch_size=8, verbose=False)

    monkeypatch.setattr(tc, "pretrain_tiny_clip", short_clip)
    monkeypatch.setattr(tu, "train_tiny_unet", short_unet)
    for _ in range(2):
        clip_path, unet_path = zoo.tiny_clip_weights(), zoo.tiny_unet_weights()
    assert builds == {"clip": 1, "unet": 1}  # built once, then read from the cache
    assert clip_path.parent == tmp_path / "zoo" and unet_path.parent == tmp_path / "zoo"
    model, _ = tc.create_tiny_clip(weights=clip_path)
    unet, _ = tu.create_tiny_unet(weights=unet_path)
    assert model.visual.image_size == (16, 16) and unet.config.num_class_embeds == 11
    assert not list(tmp_path.joinpath("zoo").glob(".*"))  # no temp files left behind (atomic writes)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt' does not exist"):
        tc.create_tiny_clip(weights=tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt' does not exist"):
        tu.create_tiny_unet(weights=tmp_path / "nope.pt")


def test_weights_from_another_public_split_are_refused(tmp_path):
    state = torch.load(zoo.WEIGHTS_DIR / zoo.TINY_UNET_FILE, weights_only=True)
    state["public_split_sha256"] = torch.zeros(32, dtype=torch.uint8)
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(RuntimeError, match="different public digits split.*zoo.build"):
        tu.create_tiny_unet(weights=tmp_path / "old.pt")


def test_ddim_loop_matches_diffusers_ddim_pipeline_without_guidance():
    """The hand-written class-conditional loop equals diffusers' DDIMPipeline on a UNet bound to one label."""
    import diffusers

    unet, scheduler = zoo.tiny_unet()

    class BoundLabel(diffusers.ModelMixin, diffusers.ConfigMixin):
        def __init__(self):
            super().__init__()
            self.inner = unet
            self.register_to_config(**{k: v for k, v in unet.config.items() if not k.startswith("_")})

        def forward(self, x, t, **kw):
            return self.inner(x, t, class_labels=torch.full((len(x),), 7, dtype=torch.long))

    ddim = diffusers.DDIMScheduler.from_config(scheduler.config)
    pipe = diffusers.DDIMPipeline(unet=BoundLabel(), scheduler=ddim)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        batch_size=3,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=10,
        eta=0.0,
        output_type="np",
    ).images
    ours = tu.sample_ddim(
        unet,
        scheduler,
        torch.full((3,), 7),
        steps=10,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(ours.permute(0, 2, 3, 1), torch.from_numpy(ref).float(), atol=1e-5, rtol=1e-4)


@pytest.mark.stochastic
def test_tiny_unet_samples_are_the_requested_digits(seed_offset):
    from lightning_addons.datamodules.synthetic_cache import ReferenceClassifierJudge

    x, y = tc.digits_public_images()
    judge = ReferenceClassifierJudge(x, y)
    unet, scheduler = zoo.tiny_unet()
    labels = torch.arange(10).repeat(5)
    images = tu.sample_ddim(
        unet, scheduler, labels, steps=25, generator=torch.Generator().manual_seed(seed_offset)
    )
    assert images.shape == (50, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert float((judge(images) == labels).float().mean()) >= 0.85
    again = tu.sample_ddim(
        unet, scheduler, labels[:4], steps=25, generator=torch.Generator().manual_seed(seed_offset)
    )
    assert torch.equal(again, images[:4]) or torch.allclose(again, images[:4], atol=1e-6)  # seeded


def test_build_script_writes_both_files(monkeypatch, tmp_path, capsys):
    from lightning_addons.zoo import build

    real_clip, real_unet = tc.pretrain_tiny_clip, tu.train_tiny_unet
    monkeypatch.setattr(tc, "pretrain_tiny_clip", lambda **kw: real_clip(epochs=1, verbose=False))
    monkeypatch.setattr(tu, "train_tiny_unet", lambda **kw: real_unet(steps=2, batch_size=8, verbose=False))
    build.main(["--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SHA256SUMS",
        zoo.TINY_CLIP_FILE,
        zoo.TINY_UNET_FILE,
    ]
    from lightning_addons.integrity import verify_file_digest

    for name in (zoo.TINY_CLIP_FILE, zoo.TINY_UNET_FILE):
        verify_file_digest(tmp_path / name)  # the build records the digests it is checked against
    assert "wrote" in capsys.readouterr().out


def test_tiny_world_training_is_deterministic():
    """The build script reproduces its weights: same seeds, same single-threaded CPU run, same tensors."""
    a, init_a, _ = tc.pretrain_tiny_clip(epochs=1, verbose=False)
    b, init_b, _ = tc.pretrain_tiny_clip(epochs=1, verbose=False)
    assert torch.equal(init_a, init_b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    u1, _ = tu.train_tiny_unet(steps=3, batch_size=8, verbose=False)
    u2, _ = tu.train_tiny_unet(steps=3, batch_size=8, verbose=False)
    for (name, x), (_, y) in zip(u1.state_dict().items(), u2.state_dict().items()):
        assert torch.equal(x, y), name
