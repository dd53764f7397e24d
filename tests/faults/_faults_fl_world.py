"""A tiny federated world for the fault tests: a linear classifier on synthetic 8-d data, 4 clients.

Imported by the tests and run as a script in subprocesses (a process that can be killed)::

    python _faults_fl_world.py --ckpt DIR --out result.pt [--seed 0] [--alpha 0.5] [--lr 0.1]
        [--rounds 4] [--hang-round R] [--marker FILE] [--no-resume]

The script writes the final global state to ``--out`` (``torch.save``) and exits 0; with
``--hang-round R`` it writes ``--marker`` after client 1 of round R trained and then sleeps (mid-round),
so the test can ``kill -9`` it there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from lightning_addons.federated import FederatedCallback, FederatedDataModule, FederatedSimulation
from lightning_addons.strategies import Aggregator


class TinyClassifier(pl.LightningModule):
    def __init__(self, lr: float = 0.1, hidden: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.Linear(hidden, 3)) if hidden else nn.Linear(8, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class TinyData(pl.LightningDataModule):
    """240 points of 8-d Gaussian data labelled by a fixed random linear map (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(240, 8, generator=g)
        self.train_set = TensorDataset(x, (x @ torch.randn(8, 3, generator=g)).argmax(1))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train_set, batch_size=16)

    def val_dataloader(self):  # the server's evaluation data (a fault world: the training points)
        return torch.utils.data.DataLoader(self.train_set, batch_size=240)

    test_dataloader = val_dataloader


def make_clients(alpha: float = 0.5, n_clients: int = 4) -> FederatedDataModule:
    return FederatedDataModule(
        TinyData(), num_clients=n_clients, partition="dirichlet", alpha=alpha, partition_seed=7, batch_size=16
    )


class _Hang(FederatedCallback):
    def __init__(self, round_: int, marker: Path) -> None:
        self.round, self.marker = round_, marker

    def on_client_end(self, simulation, round, client, module):
        if round == self.round and client == 1:
            self.marker.write_text("mid-round")
            time.sleep(120)


def make_simulation(
    ckpt: str | Path | None,
    seed: int = 0,
    alpha: float = 0.5,
    lr: float = 0.1,
    rounds: int = 4,
    hidden: int = 0,
    aggregator: Aggregator | None = None,
    callbacks=(),
    cls=FederatedSimulation,
) -> FederatedSimulation:
    torch.manual_seed(seed)
    return cls(
        TinyClassifier(lr=lr, hidden=hidden),
        make_clients(alpha),
        rounds=rounds,
        checkpoint_dir=ckpt,
        aggregator=aggregator if aggregator is not None else Aggregator(server_optimizer="fedavgm"),
        progress_bar=False,
        callbacks=list(callbacks),
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--hang-round", type=int, default=None)
    p.add_argument("--marker", default=None)
    p.add_argument("--no-resume", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    callbacks = [_Hang(a.hang_round, Path(a.marker))] if a.hang_round is not None else []
    sim = make_simulation(a.ckpt, a.seed, a.alpha, a.lr, a.rounds, callbacks=callbacks)
    result = sim.fit(resume=not a.no_resume)
    torch.save({"global_state": result.global_state, "rounds": [h["round"] for h in result.history]}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
