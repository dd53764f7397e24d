"""The ``fedavg`` DDP strategy: 2 CPU processes reach the same global state as the in-process simulation."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import StrategyRegistry

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.federated import FederatedDataModule, FederatedSimulation
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5
from lightning_addons.strategies import Aggregator, FedAvgStrategy, get_federated_state


def _module():
    torch.manual_seed(0)
    return ImageClassifier(LeNet5(width=0.5), lr=3e-3, optimizer="adam")


def _one_rank_trainer(**kwargs):
    return Trainer(
        strategy=FedAvgStrategy(round_every_n_epochs=1),
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


def test_fedavg_is_registered_by_name():
    for name in ("fedavg", "fedavg_spawn", "fedavg_fork"):
        assert name in StrategyRegistry
    trainer = Trainer(strategy="fedavg_fork", accelerator="cpu", devices=2, logger=False)
    assert isinstance(trainer.strategy, FedAvgStrategy)


def test_fedavg_strategy_arguments_are_validated():
    with pytest.raises(ValueError, match=r"`round_every_n_epochs` must be a positive integer, got 0"):
        FedAvgStrategy(round_every_n_epochs=0)
    with pytest.raises(ValueError, match=r"`server_optimizer` must be one of .*got 'sgd'"):
        FedAvgStrategy(server_optimizer="sgd")


@pytest.mark.ddp
@pytest.mark.timeout(240)
@pytest.mark.parametrize("server_optimizer", ["none", "fedavgm"])
def test_two_rank_fedavg_matches_the_simulation(server_optimizer):
    rounds, local_epochs = 2, 2
    fdm = FederatedDataModule(DigitsDataModule(resize=32), num_clients=2, partition="dirichlet", alpha=0.5)

    sim_module = _module()
    sim = FederatedSimulation(
        sim_module,
        fdm,
        rounds=rounds,
        local_epochs=local_epochs,
        progress_bar=False,
        eval_datamodule=None,
        aggregator=Aggregator(server_optimizer=server_optimizer, server_momentum=0.5),
    )
    sim_state = sim.fit().global_state

    ddp_module = _module()
    start = get_federated_state(ddp_module)
    strategy = FedAvgStrategy(
        round_every_n_epochs=local_epochs,
        server_optimizer=server_optimizer,
        server_momentum=0.5,
        start_method="fork",
    )
    trainer = Trainer(
        strategy=strategy,
        accelerator="cpu",
        use_distributed_sampler=False,
        devices=2,
        max_epochs=rounds * local_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(
        ddp_module,
        datamodule=FederatedDataModule(
            DigitsDataModule(resize=32), num_clients=2, partition="dirichlet", alpha=0.5
        ),
    )
    ddp_state = get_federated_state(ddp_module)
    assert any(not torch.equal(start[k], ddp_state[k]) for k in start)  # it trained
    for key in sim_state:
        torch.testing.assert_close(ddp_state[key], sim_state[key], rtol=1e-5, atol=1e-6)


def test_a_rank_with_a_nan_state_is_not_averaged_in(caplog):
    import lightning.pytorch as pl

    class Poison(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                with torch.no_grad():
                    next(pl_module.parameters()).fill_(float("nan"))

    module = _module()
    start = get_federated_state(module)
    trainer = _one_rank_trainer(use_distributed_sampler=False, callbacks=[Poison()])
    fdm = FederatedDataModule(DigitsDataModule(resize=32), num_clients=1)
    with caplog.at_level("WARNING"):
        trainer.fit(module, datamodule=fdm)
    assert "rank 0 sent an invalid update" in caplog.text and "not averaged in" in caplog.text
    end = get_federated_state(module)
    assert all(torch.equal(start[k], end[k]) for k in start)  # the round kept the last global state
    assert trainer.strategy.rounds_done == 1


def test_fit_without_use_distributed_sampler_false_fails_before_training():
    trainer = _one_rank_trainer(limit_train_batches=1)
    fdm = FederatedDataModule(DigitsDataModule(resize=32), num_clients=1)
    with pytest.raises(
        ValueError, match=r"DistributedSampler .*`Trainer\(strategy=\.\.\., use_distributed_sampler=False\)`"
    ):
        trainer.fit(_module(), datamodule=fdm)
    assert trainer.global_step == 0 and trainer.strategy.rounds_done == 0


def test_missing_lightning_sigterm_internal_is_a_loud_error(monkeypatch):
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    monkeypatch.delattr(_TrainingEpochLoop, "_broadcast_sigterm_tensor")
    trainer = _one_rank_trainer(use_distributed_sampler=False)
    with pytest.raises(
        RuntimeError, match=r"needs Lightning's `_TrainingEpochLoop._broadcast_sigterm_tensor`"
    ):
        trainer.strategy.setup(trainer)


def test_fedprox_anchors_on_the_public_round_start_state():
    from lightning_addons.strategies import FedProx

    strategy = FedAvgStrategy()
    assert strategy.round_start_state is None
    state = {"w": torch.zeros(1)}
    strategy._round_start = state
    trainer = type("T", (), {"strategy": strategy})()
    assert FedProx(0.1)._current_anchor(trainer) is state


@pytest.mark.ddp
@pytest.mark.timeout(240)
def test_a_rank_sending_a_huge_update_is_not_averaged_in():
    import lightning.pytorch as pl

    class Scale(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # before the round's average
            if trainer.global_rank == 1 and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                with torch.no_grad():
                    for p in pl_module.parameters():
                        p.mul_(1e6)

    module = _module()
    start = get_federated_state(module)
    trainer = Trainer(
        strategy=FedAvgStrategy(round_every_n_epochs=1, start_method="fork"),
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Scale()],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=FederatedDataModule(DigitsDataModule(resize=32), num_clients=2))
    end = get_federated_state(module)
    assert any(not torch.equal(start[k], end[k]) for k in start)  # rank 0's update went in
    biggest = max(float(v.abs().max()) for v in end.values())
    assert biggest < 10 * max(float(v.abs().max()) for v in start.values())  # rank 1's 1e6x did not
