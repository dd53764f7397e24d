"""AnomalyFilterPruning: masks stay zero, checkpoints load strictly and resume, criteria, caps, physical mode."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_addons.callbacks import AnomalyFilterPruning, GMMFilterAuditor
from lightning_addons.callbacks.pruning import fold_pruning_masks, following_batchnorm
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import AlexNetSmall, LeNet5

ALEX_CONVS = [
    "model.features.0",
    "model.features.4",
    "model.features.8",
    "model.features.11",
    "model.features.14",
]


def alexnet(seed: int = 0) -> ImageClassifier:
    pl.seed_everything(seed, verbose=False)
    return ImageClassifier(AlexNetSmall(width=0.25), lr=3e-3)


def effective(module, name):
    return getattr(module, name).detach()


def assert_pruned_zero(pl_module, pruned: dict[str, list[int]]):
    modules = dict(pl_module.named_modules())
    for layer, idx in pruned.items():
        conv = modules[layer]
        assert torch.count_nonzero(effective(conv, "weight")[idx]) == 0
        assert torch.count_nonzero(effective(conv, "bias")[idx]) == 0
        bn = modules[following_batchnorm(pl_module, layer)]
        assert torch.count_nonzero(effective(bn, "weight")[idx]) == 0
        assert torch.count_nonzero(effective(bn, "bias")[idx]) == 0
        kept = [i for i in range(conv.out_channels) if i not in idx]
        assert torch.count_nonzero(effective(conv, "weight")[kept]) > 0


def test_following_batchnorm_is_found_only_when_it_follows_the_conv():
    module = ImageClassifier(AlexNetSmall(width=0.25))
    assert following_batchnorm(module, "model.features.0") == "model.features.1"
    assert following_batchnorm(ImageClassifier(LeNet5()), "model.features.0") is None


def test_masked_filters_stay_exactly_zero_after_optimizer_steps(make_trainer):
    pruning = AnomalyFilterPruning(criterion="l1", amount=2, epochs=1)
    module = alexnet()
    trainer = make_trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=0, callbacks=[pruning])
    trainer.fit(module, DigitsDataModule(resize=32))
    pruned = pruning.pruned_filters
    assert sorted(pruned) == sorted(ALEX_CONVS) and all(len(v) == 2 for v in pruned.values())
    assert_pruned_zero(module, pruned)
    assert not any(k.endswith("_orig") for k in module.state_dict())
    # the pruned channels output exactly zero after conv + BN on real data
    x = DigitsDataModule(resize=32).dataset("train").x[:16]
    out = {}
    hook = module.model.features[1].register_forward_hook(lambda m, i, o: out.setdefault("bn", o))
    module.eval()
    module(x)
    hook.remove()
    assert torch.count_nonzero(out["bn"][:, pruned["model.features.0"]]) == 0
    assert float(trainer.callback_metrics["prune/pruned_filters"]) == 10


def _pruned_checkpoint(make_trainer, tmp_path, dm):
    pruning = AnomalyFilterPruning(criterion="random", amount=0.25, epochs=[1], seed=3)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[pruning, ckpt],
        enable_checkpointing=True,
    )
    trainer.fit(alexnet(), dm)
    return pruning, tmp_path / "ckpt" / "last.ckpt"


def test_checkpoint_holds_the_masks_and_folds_into_a_plain_state_dict(make_trainer, tmp_path):
    pruning, path = _pruned_checkpoint(make_trainer, tmp_path, DigitsDataModule(resize=32))
    raw = torch.load(path, weights_only=True)
    assert {k[: -len(".weight_mask")] for k in raw["state_dict"] if k.endswith("weight_mask")} >= set(
        ALEX_CONVS
    )
    fresh = alexnet(5)
    fresh.load_state_dict(fold_pruning_masks(raw["state_dict"]), strict=True)
    for layer, idx in pruning.pruned_filters.items():
        assert torch.count_nonzero(dict(fresh.named_modules())[layer].weight[idx]) == 0


@pytest.mark.parametrize(
    "settings",
    [
        dict(criterion="random", amount=0.25, epochs=[1], seed=3),
        dict(criterion="l1", amount=1, epochs=[9], max_fraction=0.2),
    ],
)
def test_resume_keeps_the_masks_whatever_the_pruning_settings(make_trainer, tmp_path, settings):
    dm = DigitsDataModule(resize=32)
    pruning, path = _pruned_checkpoint(make_trainer, tmp_path, dm)
    resumed = AnomalyFilterPruning(**settings)
    module = alexnet(7)
    trainer2 = make_trainer(max_epochs=4, limit_train_batches=2, limit_val_batches=1, callbacks=[resumed])
    trainer2.fit(module, dm, ckpt_path=str(path))
    assert resumed.pruned_filters == pruning.pruned_filters  # no event after epoch 1 in either setting
    assert_pruned_zero(module, resumed.pruned_filters)  # the pruned filters did not grow back in epochs 2-3
    assert not hasattr(module.model.features[0], "weight_mask")  # folded in at fit end: a plain model again
    assert set(module.state_dict()) == set(alexnet().state_dict())


def test_resume_without_the_pruning_callback_fails_clearly(make_trainer, tmp_path):
    dm = DigitsDataModule(resize=32)
    _, path = _pruned_checkpoint(make_trainer, tmp_path, dm)
    trainer2 = make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1)
    with pytest.raises(
        RuntimeError, match=r"(?s)Missing key.*model.features.0.weight.*Unexpected key.*weight_orig"
    ):
        trainer2.fit(alexnet(7), dm, ckpt_path=str(path))


@pytest.mark.stochastic
def test_anomaly_criterion_prunes_the_audit_anomaly_sets(make_trainer, seed_offset):
    pl.seed_everything(seed_offset, verbose=False)  # LeNet5's initial weights
    dm = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, seed=seed_offset)
    auditor = GMMFilterAuditor(
        max_overhead=None,
        max_samples=256,
        rule="small_component",
        rule_kwargs={"tau": 0.2},
        figures="none",
        save_tables=False,
        seed=seed_offset,
    )
    pruning = AnomalyFilterPruning(auditor, criterion="anomaly", epochs=1, max_fraction=0.5)
    module = ImageClassifier(LeNet5(), lr=3e-3)
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=8, limit_val_batches=1, callbacks=[auditor, pruning]
    )
    pl.seed_everything(seed_offset, verbose=False)
    trainer.fit(module, dm)
    first = auditor.history[0]
    sets = {}
    for r in sorted(first["filters"], key=lambda r: -r["score"]):
        if r["anomaly"]:
            sets.setdefault(r["layer"], []).append(r["filter"])
    expected = {
        layer: sorted(v[: min(int(0.5 * n), n - 1)])
        for layer, v in sets.items()
        for n in [6 if layer.endswith("0") else 16]
    }
    assert sets, "the audit should find anomaly filters with tau=0.2"
    assert pruning.pruned_filters == {k: v for k, v in expected.items() if v}
    # pruned filters are dead in the next audit, so never counted as anomalies again
    second = {(r["layer"], r["filter"]): r for r in auditor.history[1]["filters"]}
    for layer, idx in pruning.pruned_filters.items():
        assert all(second[(layer, i)]["dead"] and not second[(layer, i)]["anomaly"] for i in idx)


@pytest.mark.parametrize("criterion", ["l1", "apoz", "random", "low_ch"])
def test_baseline_criteria_prune_equal_counts_within_the_cap(make_trainer, criterion):
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    sets = {"model.features.0": [0, 1, 2, 3, 4, 5, 6, 7], "model.features.4": [1]}
    pruning = AnomalyFilterPruning(
        auditor,
        anomaly_sets=sets,
        criterion=criterion,
        epochs=1,
        max_fraction=0.5,
        ignored_layers=["model.features.8"],
    )
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[auditor, pruning]
    )
    module = alexnet()
    trainer.fit(module, DigitsDataModule(resize=32))
    pruned = pruning.pruned_filters
    assert {k: len(v) for k, v in pruned.items()} == {
        "model.features.0": 4,
        "model.features.4": 1,
    }  # 8 capped at 50%
    assert_pruned_zero(module, pruned)
    if (
        criterion == "l1"
    ):  # smallest-norm filters at the pruning event: compare with the norms of the kept ones
        w = module.model.features[4].weight.detach().abs().flatten(1).sum(1)
        assert len(w) == 16


@pytest.mark.parametrize("amount", [3, 0.25])
def test_l1_criterion_picks_the_filters_torch_ln_structured_prunes(amount):
    import copy

    from torch.nn.utils import prune

    module = alexnet()
    pruning = AnomalyFilterPruning(criterion="l1", amount=amount, max_fraction=0.5)
    pruning.setup(None, module, "fit")
    decision = pruning.decide(None, module, epoch=0)
    assert set(decision) == set(ALEX_CONVS)
    for layer, idx in decision.items():
        conv = copy.deepcopy(dict(module.named_modules())[layer])
        prune.ln_structured(conv, "weight", amount=amount, n=1, dim=0)  # the library's L1 filter pruning
        assert idx == (conv.weight_mask.flatten(1).sum(1) == 0).nonzero().flatten().tolist(), layer


def test_random_criterion_is_seeded():
    sets = {}
    for _ in range(2):
        pruning = AnomalyFilterPruning(criterion="random", amount=3, seed=11)
        module = alexnet()
        pruning.setup(None, module, "fit")
        sets.setdefault("d", []).append(pruning.decide(None, module, epoch=1))
    assert sets["d"][0] == sets["d"][1] and len(sets["d"][0]["model.features.0"]) == 3


def test_physical_mode_removes_channels_and_reports_reductions(make_trainer):
    pytest.importorskip("torch_pruning")
    pruning = AnomalyFilterPruning(criterion="l1", amount=2, epochs=1, mode="physical")
    module = ImageClassifier(LeNet5(), lr=3e-3)
    trainer = make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[pruning])
    trainer.fit(module, DigitsDataModule(resize=32))
    assert module.model.features[0].out_channels == 4 and module.model.features[3].out_channels == 14
    assert 0 < pruning.reductions["params_reduction"] < 1 and 0 < pruning.reductions["flops_reduction"] < 1
    assert "prune/flops_reduction" in trainer.callback_metrics
    assert module(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"criterion": "l2", "amount": 1},
            r"`criterion` must be one of \['anomaly', 'l1', 'apoz', 'random', 'low_ch'\]",
        ),
        ({"criterion": "l1", "amount": 1, "mode": "hard"}, r"`mode` must be one of \['mask', 'physical'\]"),
        ({"criterion": "l1", "amount": 1.5}, r"`amount` must be None, an int >= 1 or a float in \(0, 1\)"),
        ({"criterion": "l1", "amount": 1, "epochs": [-1]}, "`epochs` must be a non-negative int"),
        ({"criterion": "l1", "amount": 1, "max_fraction": 1.0}, r"`max_fraction` must be in \(0, 1\)"),
        ({"criterion": "anomaly", "anomaly_sets": {"a": "x"}}, "`anomaly_sets` must be a dict"),
        ({"auditor": "x", "criterion": "l1", "amount": 1}, "`auditor` must be a GMMFilterAuditor"),
    ],
)
def test_bad_pruning_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnomalyFilterPruning(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"criterion": "anomaly"},
            r"criterion='anomaly' needs a GMMFilterAuditor: pass `auditor=...` .* `anomaly_sets`",
        ),
        ({"criterion": "low_ch", "anomaly_sets": {"a": [1]}}, "criterion='low_ch' needs a GMMFilterAuditor"),
        ({"criterion": "l1"}, r"amount=None \(as many as the anomaly set\) needs .* set `amount`"),
    ],
)
def test_audit_based_pruning_without_an_auditor_is_rejected_at_setup(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnomalyFilterPruning(**kwargs).setup(None, ImageClassifier(LeNet5()), "fit")


def test_auditor_is_found_among_the_trainer_callbacks(make_trainer):
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64)
    pruning = AnomalyFilterPruning(criterion="anomaly")
    pruning.setup(make_trainer(callbacks=[auditor, pruning]), ImageClassifier(LeNet5()), "fit")
    assert pruning.auditor is auditor


def test_unknown_or_non_conv_layers_are_rejected_at_setup():
    module = ImageClassifier(LeNet5())
    with pytest.raises(ValueError, match=r"`layers` names \['model.classifier.1'\] that are not nn.Conv2d"):
        AnomalyFilterPruning(criterion="l1", amount=1, layers=["model.classifier.1"]).setup(
            None, module, "fit"
        )
    with pytest.raises(ValueError, match=r"`ignored_layers` names \['nope'\]"):
        AnomalyFilterPruning(criterion="l1", amount=1, ignored_layers=["nope"]).setup(None, module, "fit")
    with pytest.raises(ValueError, match="has no layer to prune"):
        AnomalyFilterPruning(
            criterion="l1", amount=1, ignored_layers=["model.features.0", "model.features.3"]
        ).setup(None, module, "fit")


def test_fit_checkpoint_resume_restores_auditor_history_and_masks(make_trainer, tmp_path):
    dm = DigitsDataModule(resize=32, return_indices=True)
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    pruning = AnomalyFilterPruning(auditor, criterion="low_ch", amount=1, epochs=1)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    make_trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[auditor, pruning, ckpt],
        enable_checkpointing=True,
    ).fit(alexnet(), dm)
    assert len(auditor.history) == 2 and sum(len(v) for v in pruning.pruned_filters.values()) == 5
    auditor2 = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    pruning2 = AnomalyFilterPruning(auditor2, criterion="low_ch", amount=1, epochs=1)
    module = alexnet(3)
    make_trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[auditor2, pruning2]
    ).fit(module, dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert auditor2.history[:2] == auditor.history and len(auditor2.history) == 3
    assert pruning2.pruned_filters == pruning.pruned_filters
    assert_pruned_zero(module, pruning2.pruned_filters)
    third = {(r["layer"], r["filter"]): r for r in auditor2.history[2]["filters"]}
    assert all(third[(layer, i)]["dead"] for layer, idx in pruning2.pruned_filters.items() for i in idx)
