"""FederatedSimulation: exactness, frozen parameters, faults, invalid updates, resume, evaluation, errors."""

from __future__ import annotations

import copy
import math
import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Dataset

from lightning_addons.federated import (
    ClientDataModule,
    FederatedCallback,
    FederatedDataModule,
    FederatedSimulation,
    ResumeMismatchError,
    local_only,
)
from lightning_addons.strategies import Aggregator, FedProx, InvalidClientUpdate, get_federated_state


def _params_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_one_client_one_round_equals_centralised_training(make_module, digits):
    fed_module = make_module()
    central = copy.deepcopy(fed_module)
    fdm = FederatedDataModule(digits, num_clients=1, partition="iid")
    sim = FederatedSimulation(fed_module, fdm, rounds=1, local_epochs=2, seed=5, progress_bar=False)
    sim.fit()

    pl.seed_everything(5, verbose=False)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(central, datamodule=ClientDataModule(digits.dataset("train"), batch_size=64))
    assert not _params_equal(central, make_module())  # it did train
    assert _params_equal(fed_module, central)


def test_frozen_parameters_stay_bit_identical_and_only_trainable_bytes_move(make_module, digits):
    module = make_module()
    module.model.features.requires_grad_(False)
    frozen0 = {k: v.clone() for k, v in module.model.features.state_dict().items()}
    seen = []

    class Check(FederatedCallback):
        def on_client_end(self, simulation, round, client, module):
            seen.append(
                all(torch.equal(frozen0[k], v) for k, v in module.model.features.state_dict().items())
            )

    fdm = FederatedDataModule(digits, num_clients=3, partition="dirichlet", alpha=0.5)
    sim = FederatedSimulation(module, fdm, rounds=2, local_epochs=1, callbacks=[Check()], progress_bar=False)
    result = sim.fit()
    assert seen == [True] * 6
    assert all(torch.equal(frozen0[k], v) for k, v in module.model.features.state_dict().items())
    assert all(k.startswith("model.classifier") for k in result.global_state)
    n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert result.communication["bytes_per_client_round"] == 2 * n_trainable * 4
    assert result.communication["ratio_to_full_model"] > 1.0


class _Slow(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        import time

        time.sleep(0.35)  # one batch of 16 takes > 5 s: past the timeout below
        return self.base[i]


class _Broken(ClientDataModule):
    def train_dataloader(self):
        raise RuntimeError("disk on fire")


def test_failing_and_timed_out_clients_are_dropped_and_the_round_aggregates_the_rest(
    make_module, digits, caplog
):
    clients = FederatedDataModule(digits, num_clients=4, partition="iid").clients()
    good0, good3 = clients[0], clients[3]
    broken = _Broken(clients[1].train_set, client_id=1)
    slow = ClientDataModule(_Slow(clients[2].train_set), batch_size=16, client_id=2)
    sim = FederatedSimulation(
        make_module(),
        [good0, broken, slow, good3],
        rounds=1,
        client_timeout=5.0,
        progress_bar=False,
        eval_datamodule=digits,
    )
    start = copy.deepcopy(sim.global_state)
    with caplog.at_level("WARNING"):
        result = sim.fit()
    record = result.history[0]
    assert record["clients"] == [0, 3]
    reasons = {d["client"]: d["reason"] for d in record["dropped"]}
    assert "disk on fire" in reasons[1] and "ClientTimeoutError" in reasons[2]
    assert "client 1 dropped" in caplog.text and "client 2 dropped" in caplog.text
    # the global state is exactly FedAvg of the two surviving clients
    ref = FederatedSimulation(make_module(), [good0, good3], rounds=1, progress_bar=False)
    ref.global_state = copy.deepcopy(start)
    s0, n0 = ref.train_client(0, 0)
    ref.clients = [good0, good0, good0, good3]  # client ids must match the seeds of the run above
    s3, n3 = ref.train_client(0, 3)
    expected = Aggregator().aggregate(start, [s0, s3], [n0, n3])
    assert all(torch.equal(expected[k], result.global_state[k]) for k in expected)


class _Poison(FederatedCallback):
    def __init__(self, client, kind):
        self.client, self.kind = client, kind

    def on_client_end(self, simulation, round, client, module):
        if client == self.client:
            with torch.no_grad():
                p = next(module.parameters())
                if self.kind == "nan":
                    p.fill_(float("nan"))


def test_nan_update_is_rejected_and_never_averaged_in(make_module, digits, caplog):
    fdm = FederatedDataModule(digits, num_clients=3, partition="iid")
    sim = FederatedSimulation(make_module(), fdm, rounds=1, callbacks=[_Poison(1, "nan")], progress_bar=False)
    with caplog.at_level("WARNING"):
        result = sim.fit()
    assert result.history[0]["clients"] == [0, 2]
    assert "client 1 sent an invalid update" in caplog.text and "non-finite" in caplog.text
    assert all(torch.isfinite(v).all() for v in result.global_state.values())
    strict = FederatedSimulation(
        make_module(),
        fdm,
        rounds=1,
        callbacks=[_Poison(1, "nan")],
        on_invalid_update="raise",
        progress_bar=False,
    )
    with pytest.raises(InvalidClientUpdate, match=r"client 1 sent an invalid update: .* non-finite values"):
        strict.fit()


def test_wrong_shape_update_is_rejected(make_module, digits):
    class Reshape(FederatedCallback):
        def on_client_end(self, simulation, round, client, module):
            if client == 0:
                module.model.classifier[-1].bias = torch.nn.Parameter(torch.zeros(3))

    fdm = FederatedDataModule(digits, num_clients=2, partition="iid")
    sim = FederatedSimulation(
        make_module(), fdm, rounds=1, callbacks=[Reshape()], progress_bar=False, on_invalid_update="raise"
    )
    with pytest.raises(InvalidClientUpdate, match=r"client 0 .*shape \(3,\), expected \(10,\)"):
        sim.fit()


class _Kill(FederatedCallback):
    def on_round_end(self, simulation, round, metrics):
        if round == 1:
            raise KeyboardInterrupt("killed after round 1")


def test_killed_simulation_resumes_from_its_last_round_with_no_lost_round(make_module, digits, tmp_path):
    fdm = FederatedDataModule(digits, num_clients=3, partition="dirichlet", alpha=0.5)
    kwargs = dict(rounds=3, local_epochs=1, fraction_fit=0.67, progress_bar=False, evaluate_every=1)
    full = FederatedSimulation(
        make_module(), fdm, aggregator=Aggregator(server_optimizer="fedavgm"), **kwargs
    ).fit()

    with pytest.raises(KeyboardInterrupt):
        FederatedSimulation(
            make_module(),
            fdm,
            checkpoint_dir=tmp_path,
            callbacks=[_Kill()],
            aggregator=Aggregator(server_optimizer="fedavgm"),
            **kwargs,
        ).fit()
    ckpt = torch.load(tmp_path / "federated_state.pt", weights_only=True)["state"]
    assert ckpt["round"] == 2 and not list(tmp_path.glob("*.tmp"))

    resumed_sim = FederatedSimulation(
        make_module(),  # the same initial state: another one is another run (see tests/faults)
        fdm,
        checkpoint_dir=tmp_path,
        aggregator=Aggregator(server_optimizer="fedavgm"),
        **kwargs,
    )
    resumed = resumed_sim.fit()
    assert [h["round"] for h in resumed.history] == [0, 1, 2]
    assert all(torch.equal(full.global_state[k], resumed.global_state[k]) for k in full.global_state)
    assert resumed.best_round == full.best_round
    assert resumed.communication == full.communication


@pytest.mark.stochastic
def test_best_round_uses_validation_and_test_runs_on_it(make_module, digits, tmp_path, seed_offset):
    fdm = FederatedDataModule(
        digits, num_clients=2, partition="iid", partition_seed=seed_offset, seed=seed_offset
    )
    logger = CSVLogger(tmp_path, name="fl")
    sim = FederatedSimulation(
        make_module(seed=seed_offset), fdm, rounds=3, logger=logger, seed=seed_offset, progress_bar=False
    )
    result = sim.fit()
    vals = [h["metrics"]["val_acc"] for h in result.history]
    assert result.best_round == max(range(3), key=lambda r: (vals[r], -r))
    assert result.best_metric == pytest.approx(max(vals))
    assert "test_acc" in result.test_metrics and result.test_metrics["test_acc"] > 0.3
    assert torch.equal(
        next(iter(get_federated_state(sim.module).values())), next(iter(result.best_state.values()))
    )
    text = (tmp_path / "fl" / "version_0" / "metrics.csv").read_text()
    assert "val_acc" in text and "bytes_total" in text and "test_acc" in text


def test_federated_evaluation_is_weighted_by_client_val_size(make_module, digits):
    fdm = FederatedDataModule(digits, num_clients=3, partition="dirichlet", alpha=0.5, local_val_fraction=0.2)
    sim = FederatedSimulation(make_module(), fdm, rounds=1, federated_evaluation=True, progress_bar=False)
    metrics = sim.fit().history[0]["metrics"]
    per_client, sizes = [], []
    for dm in fdm.clients():
        out = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        per_client.append(
            out.validate(sim.module, dataloaders=dm.val_dataloader(), verbose=False)[0]["val_acc"]
        )
        sizes.append(len(dm.val_set))
    expected = sum(a * n for a, n in zip(per_client, sizes)) / sum(sizes)
    assert metrics["fed_val_acc"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.stochastic
def test_client_sampling_is_seeded_with_fraction_and_minimum(make_module, digits, seed_offset):
    fdm = FederatedDataModule(digits, num_clients=10, partition="iid", min_size=5)
    sim = FederatedSimulation(
        make_module(), fdm, fraction_fit=0.3, min_fit_clients=4, seed=1 + seed_offset, progress_bar=False
    )
    rounds = [sim.sample_clients(r) for r in range(5)]
    assert all(len(c) == 4 and c == sorted(set(c)) for c in rounds)
    assert len({tuple(c) for c in rounds}) > 1
    assert rounds == [sim.sample_clients(r) for r in range(5)]


@pytest.mark.stochastic
def test_fedprox_keeps_the_client_closer_to_the_global_state(make_module, digits, seed_offset):
    fdm = FederatedDataModule(digits, num_clients=1, seed=seed_offset)

    def drift(mu):
        sim = FederatedSimulation(
            make_module(seed=seed_offset),
            fdm,
            rounds=1,
            client_callbacks=[FedProx(mu)],
            seed=seed_offset,
            progress_bar=False,
        )
        start = copy.deepcopy(sim.global_state)
        state, _ = sim.train_client(0, 0)
        return math.sqrt(sum(float((state[k] - start[k]).pow(2).sum()) for k in state))

    assert drift(1.0) < 0.8 * drift(0.0)
    with pytest.raises(ValueError, match=r"`mu` must be a finite number >= 0, got -1"):
        FedProx(-1)


@pytest.mark.stochastic
def test_local_only_baseline_trains_each_client_alone(make_module, digits, seed_offset):
    fdm = FederatedDataModule(
        digits, num_clients=5, partition="pathological", classes_per_client=2, partition_seed=seed_offset
    )
    out = local_only(make_module(seed=seed_offset), fdm, epochs=2, eval_datamodule=digits, seed=seed_offset)
    accs = [m["test_acc"] for m in out["per_client"]]
    assert len(accs) == 5 and out["mean"]["test_acc"] == pytest.approx(sum(accs) / 5)
    assert max(accs) < 0.45  # a client that saw 2 classes cannot classify 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": 0}, r"`rounds` must be a positive integer, got 0"),
        ({"fraction_fit": 1.5}, r"`fraction_fit` must be in \(0, 1\], got 1.5"),
        ({"min_fit_clients": 9}, r"`min_fit_clients`=9 exceeds the 2 clients"),
        ({"mode": "up"}, r"`mode` must be one of \['max', 'min'\], got 'up'"),
        ({"monitor": "test_acc"}, r"`monitor` must be a validation metric"),
        (
            {"on_invalid_update": "keep"},
            r"`on_invalid_update` must be one of \['drop', 'raise'\], got 'keep'",
        ),
        ({"client_timeout": 0}, r"`client_timeout` must be > 0 seconds or None, got 0"),
        ({"trainer_kwargs": {"max_epochs": 3}}, r"`trainer_kwargs` must not set \['max_epochs'\]"),
    ],
)
def test_bad_simulation_arguments_raise_clear_errors(make_module, digits, kwargs, match):
    fdm = FederatedDataModule(digits, num_clients=2)
    with pytest.raises(ValueError, match=match):
        FederatedSimulation(make_module(), fdm, **kwargs)


def test_resume_rejects_a_checkpoint_of_another_federation(make_module, digits, tmp_path):
    FederatedSimulation(
        make_module(),
        FederatedDataModule(digits, num_clients=2),
        rounds=1,
        checkpoint_dir=tmp_path,
        progress_bar=False,
    ).fit()
    other = FederatedSimulation(
        make_module(),
        FederatedDataModule(digits, num_clients=3),
        rounds=1,
        checkpoint_dir=tmp_path,
        progress_bar=False,
    )
    with pytest.raises(
        ResumeMismatchError, match=r"Differing keys: \[.*'federation.num_clients'.*--no-resume"
    ):
        other.fit()


def _yaml_config(**federation):
    from lightning_addons.federated.config import load_config

    return load_config(
        {
            "seed": 0,
            "model": {
                "class_path": "ImageClassifier",
                "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
            },
            "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
            "federation": {"num_clients": 2, "rounds": 2, **federation},
        }
    )


def test_yaml_run_fingerprint_names_config_keys_and_ignores_rounds_and_checkpoint_dir(tmp_path):
    from lightning_addons.federated.config import build_simulation

    base = build_simulation(_yaml_config(checkpoint_dir=str(tmp_path))).fingerprint()
    longer = build_simulation(_yaml_config(rounds=5, checkpoint_dir=str(tmp_path / "x"))).fingerprint()
    assert longer == base  # extending a run or moving its checkpoint is the same run
    other = _yaml_config(aggregator={"rule": "median"})
    other["model"]["init_args"]["lr"] = 0.1
    changed = build_simulation(other).fingerprint()
    differ = {k for k in base.keys() | changed.keys() if base.get(k) != changed.get(k)}
    assert {"config.model.init_args.lr", "module.hparams.lr", "aggregator.rule"} <= differ
    assert not any(k.startswith("clients.") for k in differ)  # same data, same partition


def test_unknown_aggregator_keys_in_a_config_are_a_clear_error():
    with pytest.raises(
        ValueError, match=r"Unknown `federation.aggregator` keys \['rul'\]; allowed: \[.*'rule'"
    ):
        _yaml_config(aggregator={"rul": "median"})


def test_without_a_terminal_each_round_prints_one_plain_line_with_its_metric(
    make_module, digits, capsys, monkeypatch
):
    monkeypatch.delenv("LIGHTNING_ADDONS_PROGRESS", raising=False)  # capsys' stdout is not a terminal
    fdm = FederatedDataModule(digits, num_clients=2, partition="iid")
    FederatedSimulation(make_module(), fdm, rounds=2, seed=0).fit()
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("federated rounds:")]
    assert lines[0] == "federated rounds: 0/2 rounds"
    assert len(lines) == 3
    for rnd, line in enumerate(lines[1:], start=1):
        pattern = rf"federated rounds: {rnd}/2 rounds  val_acc=[01]\.\d{{4}} clients=2  \[[\d.]+s\]"
        assert re.fullmatch(pattern, line)
    assert "\r" not in out + err


def test_local_only_with_progress_prints_one_plain_line_per_client(make_module, digits, capsys, monkeypatch):
    monkeypatch.delenv("LIGHTNING_ADDONS_PROGRESS", raising=False)
    fdm = FederatedDataModule(digits, num_clients=2, partition="iid")
    local_only(make_module(), fdm, epochs=1, progress_bar=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("local-only clients:")]
    assert lines[0] == "local-only clients: 0/2 clients"
    assert [ln.split("  ")[0] for ln in lines[1:]] == [
        "local-only clients: 1/2 clients",
        "local-only clients: 2/2 clients",
    ]
    assert all("test_acc=" in ln for ln in lines[1:])
