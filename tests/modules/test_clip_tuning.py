"""PromptFL's CoOp context and FedCLIP's attention adapter on the tiny CLIP: exact against open_clip, only the small
trained part moves in federated training, bad input is refused naming the argument."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

pytest.importorskip("open_clip")

from lightning_addons.experiments.cachefl import TensorSplitsDataModule  # noqa: E402
from lightning_addons.federated import ClientDataModule, FederatedSimulation  # noqa: E402
from lightning_addons.modules import AdapterCLIPClassifier, PromptCLIPClassifier  # noqa: E402
from lightning_addons.modules.nn import AttentionAdapter, PromptLearner, encode_prompt_embeddings  # noqa: E402

TEMPLATE_CONTEXT, TEMPLATE_SUFFIX = 'a photo of the number: "', '".'


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    from lightning_addons.zoo import tiny_clip

    return tiny_clip()


@pytest.fixture(scope="module")
def digit_features():
    """The tiny CLIP's normalised features of the embedded world's private digits (domain-shifted, never seen in
    the CLIP's pre-training): train / val / test."""
    from lightning_addons.datamodules import DigitsDataModule
    from lightning_addons.modules import CacheCLIPAdapter

    dm = DigitsDataModule(
        public_fraction=0.3, normalize=False, channels=1, corruptions={"domain_shift": True}, seed=0
    )
    dm.setup("fit")
    encoder = CacheCLIPAdapter(search_alpha_beta=False)
    out = {}
    for split in ("train", "val", "test"):
        ds = dm.dataset(split)
        out[split] = (encoder.encode_images(ds.x), ds.y)
    return out


def two_clients(x, y, seed=0):
    half = len(y) // 2
    data = TensorDataset(x, y)
    return [
        ClientDataModule(Subset(data, list(range(half))), batch_size=32, client_id=0, seed=seed),
        ClientDataModule(Subset(data, list(range(half, len(y)))), batch_size=32, client_id=1, seed=seed),
    ]


def test_a_template_initialised_prompt_gives_exactly_open_clips_text_features(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    names = ["zero", "one", "seven"]
    learner = PromptLearner.from_clip(
        clip, tokenizer, names, context_init=TEMPLATE_CONTEXT, suffix=TEMPLATE_SUFFIX
    )
    ours = encode_prompt_embeddings(clip, learner(), learner.tokens)
    ref = clip.encode_text(tokenizer([f'a photo of the number: "{n}".' for n in names]))
    assert torch.equal(ours, ref)
    # random context (CoOp's default): same prompts with the placeholders' own embeddings equal encode_text too
    rand = PromptLearner.from_clip(clip, tokenizer, names, num_context=4)
    with torch.no_grad():
        rand.context.copy_(clip.token_embedding(rand.tokens[0, 1:5]))
    assert torch.equal(encode_prompt_embeddings(clip, rand(), rand.tokens), clip.encode_text(rand.tokens))
    assert rand.context.requires_grad and [n for n, _ in rand.named_parameters()] == ["context"]


def test_promptfl_moves_only_the_context_and_never_touches_clip(digit_features):
    x, y = digit_features["train"]
    module = PromptCLIPClassifier(context_init=TEMPLATE_CONTEXT, suffix=TEMPLATE_SUFFIX, lr=1e-2)
    clip_before = copy.deepcopy(module.clip.state_dict())
    buffers_before = {k: v.clone() for k, v in module.prompt.named_buffers()}
    context_before = module.prompt.context.detach().clone()
    sim = FederatedSimulation(
        module, two_clients(x[:200], y[:200]), rounds=1, local_epochs=1, progress_bar=False
    )
    result = sim.fit()
    assert list(result.global_state) == ["prompt.context"]
    assert all(r["up"] == r["down"] == 7 * 64 * 4 for r in sim.meter.records) and len(sim.meter.records) == 2
    assert not torch.equal(result.global_state["prompt.context"], context_before)
    assert all(torch.equal(v, module.clip.state_dict()[k]) for k, v in clip_before.items())
    assert all(torch.equal(v, dict(module.prompt.named_buffers())[k]) for k, v in buffers_before.items())
    assert torch.equal(module.prompt.context.detach(), result.best_state["prompt.context"])


def test_the_adapter_federates_its_batch_norm_statistics_so_the_server_evaluates_with_trained_ones(
    digit_features,
):
    x, y = digit_features["train"]
    module = AdapterCLIPClassifier(lr=1e-2)
    sim = FederatedSimulation(
        module,
        two_clients(x[:200], y[:200]),
        rounds=1,
        local_epochs=1,
        progress_bar=False,
        eval_datamodule=TensorSplitsDataModule(digit_features),
    )
    result = sim.fit()
    keys = sorted(result.global_state)
    assert "adapter.norm.running_mean" in keys and "adapter.norm.num_batches_tracked" not in keys
    n_floats = 2 * (64 * 64 + 64) + 4 * 64
    assert all(r["up"] == r["down"] == n_floats * 4 for r in sim.meter.records)
    mean = result.global_state["adapter.norm.running_mean"]
    assert not torch.equal(mean, torch.zeros_like(mean))  # trained statistics reached the server
    assert torch.equal(module.adapter.norm.running_mean, mean)  # and the module evaluates with them
    assert 0.0 <= result.test_metrics["test_acc"] <= 1.0


def test_a_single_sample_training_batch_uses_the_adapters_running_statistics():
    torch.manual_seed(0)
    adapter = AttentionAdapter(8)
    adapter.norm.running_mean.normal_()
    adapter.norm.running_var.uniform_(0.5, 2.0)
    f = torch.randn(1, 8)
    train_out = adapter.train()(f)
    eval_out = adapter.eval()(f)
    assert torch.equal(train_out, eval_out)
    assert torch.allclose(adapter.attention(f).sum(-1), torch.ones(1))


@pytest.mark.stochastic
@pytest.mark.parametrize("kind", ["prompt", "adapter"])
def test_centralised_training_lifts_accuracy_above_zero_shot_clip(digit_features, kind, seed_offset):
    import lightning.pytorch as pl

    seed = 11 + seed_offset
    pl.seed_everything(seed, verbose=False)
    if kind == "prompt":
        module = PromptCLIPClassifier(
            context_init=TEMPLATE_CONTEXT, suffix=TEMPLATE_SUFFIX, lr=1e-2, seed=seed
        )
    else:
        module = AdapterCLIPClassifier(lr=1e-2, seed=seed)
    data = TensorSplitsDataModule(digit_features, batch_size=32)
    x_test, y_test = digit_features["test"]
    zero_shot = float(
        (module.logit_scale * x_test @ module.text_weights.T).argmax(-1).eq(y_test).float().mean()
    )
    trainer = pl.Trainer(
        max_epochs=10,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    acc = trainer.test(module, dataloaders=data.test_dataloader(), verbose=False)[0]["test_acc"]
    assert acc > zero_shot + 0.03, (kind, acc, zero_shot)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: PromptCLIPClassifier(num_context=0), r"`num_context` must be a positive integer, got 0"),
        (
            lambda: PromptCLIPClassifier(context_init="  "),
            r"`context_init` must be a non-empty string or None",
        ),
        (
            lambda: PromptCLIPClassifier(context_init="a " * 30),
            r"does not fit the text tower's context length 20",
        ),
        (lambda: PromptCLIPClassifier(num_context=17), r"does not fit the text tower's context length 20"),
        (
            lambda: PromptLearner(torch.zeros(2, 20).long(), torch.zeros(2, 20, 64), num_context=19),
            r"`num_context` must be an integer in \[1, 18\], got 19",
        ),
        (lambda: PromptCLIPClassifier(lr=0), r"`lr` must be a number > 0, got 0"),
        (lambda: PromptCLIPClassifier(scheduler="step"), r"`scheduler` must be one of \['cosine', 'none'\]"),
        (
            lambda: AdapterCLIPClassifier(norm="group"),
            r"`norm` must be one of \['batch', 'layer', 'none'\], got 'group'",
        ),
        (lambda: AdapterCLIPClassifier(hidden=0), r"`hidden` must be a positive integer or None, got 0"),
        (lambda: AdapterCLIPClassifier(class_names=["a"]), r"`class_names` must hold at least 2 classes"),
        (lambda: AdapterCLIPClassifier(clip_model="ViT-Q-99"), r"is not an open_clip model name"),
        (lambda: AttentionAdapter(8)(torch.zeros(2, 4)), r"`features` must be \[B, 8\], got \(2, 4\)"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_features_of_another_clip_and_a_tower_without_a_text_transformer_are_refused(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    module = AdapterCLIPClassifier(class_names=["zero", "one"])
    with pytest.raises(ValueError, match=r"Features have dimension 32 but 'tiny-digits-clip' produces 64-d"):
        module(torch.zeros(2, 32))
    with pytest.raises(TypeError, match=r"Prompt learning needs an open_clip text transformer"):
        PromptLearner.from_clip(torch.nn.Linear(2, 2), tokenizer, ["zero", "one"])
    learner = PromptLearner.from_clip(clip, tokenizer, ["zero", "one"])
    with pytest.raises(
        ValueError, match=r"`embeddings` must be \[N, 20, 64\] for this text tower, got \(2, 19, 64\)"
    ):
        encode_prompt_embeddings(clip, learner()[:, :19], learner.tokens[:, :19])
    with pytest.raises(ValueError, match=r"Federated state must hold exactly \['prompt.context'\]; missing"):
        PromptCLIPClassifier(class_names=["zero", "one"]).load_federated_state_dict({})
