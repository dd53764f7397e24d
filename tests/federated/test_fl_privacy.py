"""Client-level differential privacy (DP-FedAvg + Opacus accountant): the reported epsilon is the
accountant's own, calibration reaches the target, the clipping bound and the noise scale are those the
accountant assumes, sampling is Poisson at the accounted rate, and a resumed run continues the count."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("opacus")

from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402
from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: E402

from lightning_addons.federated import FederatedSimulation  # noqa: E402
from lightning_addons.federated.simulation import FederatedCallback  # noqa: E402
from lightning_addons.strategies.aggregation import Aggregator  # noqa: E402
from lightning_addons.strategies.privacy import (  # noqa: E402
    ClientDP,
    calibrate_noise_multiplier,
    dp_fedavg_average,
    epsilon_spent,
)


def _opacus_rdp_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    """Opacus's RDP analysis called directly (its accountant's default orders)."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=orders)
    eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


# ------------------------------------------------------------------ accounting
def test_reported_epsilon_per_round_is_the_rdp_accountants_own():
    dp = ClientDP(clip_norm=1.0, sample_rate=0.2, noise_multiplier=1.1, delta=1e-5, seed=0)
    state = {"w": torch.zeros(3)}
    for r in range(3):
        clients = dp.sample_clients(r, num_clients=10)
        state = dp.aggregate(state, [{"w": torch.ones(3)}] * len(clients), r, num_clients=10)
    assert dp.rounds_accounted == 3
    assert [h["epsilon"] for h in dp.history] == [_opacus_rdp_epsilon(1.1, 0.2, t, 1e-5) for t in (1, 2, 3)]
    reference = RDPAccountant()
    for _ in range(3):
        reference.step(noise_multiplier=1.1, sample_rate=0.2)
    assert dp.epsilon == reference.get_epsilon(delta=1e-5) == epsilon_spent(1.1, 0.2, 3, 1e-5)
    # more rounds spend more; more noise spends less
    assert dp.history[0]["epsilon"] < dp.history[-1]["epsilon"] < epsilon_spent(0.9, 0.2, 3, 1e-5)


def test_prv_accountant_reports_its_own_epsilon():
    dp = ClientDP(clip_norm=1.0, sample_rate=0.2, noise_multiplier=1.1, accountant="prv", seed=0)
    for r in range(2):
        dp.aggregate({"w": torch.zeros(2)}, [], r, num_clients=10)
    reference = PRVAccountant()
    for _ in range(2):
        reference.step(noise_multiplier=1.1, sample_rate=0.2)
    assert dp.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)


def test_calibrated_noise_reaches_the_target_epsilon_within_the_search_tolerance():
    dp = ClientDP(clip_norm=0.5, sample_rate=0.1, target_epsilon=4.0, delta=1e-5, rounds=20, seed=0)
    spent = epsilon_spent(dp.noise_multiplier, 0.1, 20, 1e-5)
    assert 4.0 - 0.01 < spent <= 4.0
    assert spent == _opacus_rdp_epsilon(dp.noise_multiplier, 0.1, 20, 1e-5)
    # the budget is for `rounds`: one more round overspends it
    assert epsilon_spent(dp.noise_multiplier, 0.1, 21, 1e-5) > 4.0
    # fewer rounds at the same target need less noise
    assert calibrate_noise_multiplier(4.0, 1e-5, 1.0, 5) < calibrate_noise_multiplier(4.0, 1e-5, 1.0, 20)


# ------------------------------------------------------------------ mechanism
def test_each_client_moves_the_released_sum_by_at_most_the_clip_norm():
    g = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    big = {"a": torch.tensor([30.0, 0.0, 40.0]), "b": torch.zeros(2, 2)}  # norm 50
    small = {"a": torch.tensor([0.1, 0.0, 0.0]), "b": torch.full((2, 2), 0.1)}  # norm sqrt(0.05)
    # no noise: exactly (clip(big) + small) / expected
    out, norms = dp_fedavg_average(g, [big, small], 2.0, 0.0, 4.0, torch.Generator())
    assert norms == pytest.approx([50.0, math.sqrt(0.05)])
    torch.testing.assert_close(out["a"], (torch.tensor([1.2, 0.0, 1.6]) + small["a"]) / 4.0)
    torch.testing.assert_close(out["b"], small["b"] / 4.0)
    # with noise (same draw): adding the big client changes the released sum by exactly the clip norm
    with_big, _ = dp_fedavg_average(g, [big, small], 2.0, 1.5, 4.0, torch.Generator().manual_seed(3))
    without, _ = dp_fedavg_average(g, [small], 2.0, 1.5, 4.0, torch.Generator().manual_seed(3))
    change = math.sqrt(sum(float(((with_big[k] - without[k]) * 4.0).double().pow(2).sum()) for k in g))
    assert change == pytest.approx(2.0, rel=1e-6)


@pytest.mark.stochastic
def test_noise_on_the_sum_has_std_noise_multiplier_times_clip_norm(seed_offset):
    g = {"w": torch.zeros(200_000, dtype=torch.float64)}
    gen = torch.Generator().manual_seed(seed_offset)
    out, _ = dp_fedavg_average(g, [], 0.7, 1.3, 5.0, gen)
    noise_on_sum = out["w"] * 5.0
    assert float(noise_on_sum.std()) == pytest.approx(1.3 * 0.7, rel=0.02)
    assert abs(float(noise_on_sum.mean())) < 0.02


@pytest.mark.stochastic
def test_clients_are_poisson_sampled_at_the_accounted_rate(seed_offset):
    dp = ClientDP(clip_norm=1.0, sample_rate=0.1, noise_multiplier=1.0, seed=seed_offset)
    sizes = [len(dp.sample_clients(r, 1000)) for r in range(50)]
    assert sum(sizes) / (50 * 1000) == pytest.approx(0.1, rel=0.05)
    assert len(set(sizes)) > 5  # Poisson: the round size varies
    assert dp.sample_clients(7, 1000) == dp.sample_clients(7, 1000)  # seeded by (seed, round)


def test_a_round_is_accounted_once_and_in_order():
    dp = ClientDP(clip_norm=1.0, sample_rate=0.5, noise_multiplier=1.0, seed=0)
    dp.aggregate({"w": torch.zeros(1)}, [], 0, 4)
    with pytest.raises(ValueError, match=r"Round 0 cannot be aggregated.*expected round 1"):
        dp.aggregate({"w": torch.zeros(1)}, [], 0, 4)
    with pytest.raises(ValueError, match=r"\['n'\] are not floating point"):
        dp.aggregate({"n": torch.zeros(1, dtype=torch.long)}, [], 1, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(clip_norm=0.0, sample_rate=0.1, noise_multiplier=1.0),
            r"`clip_norm` must be a finite number > 0, got 0.0",
        ),
        (
            dict(clip_norm=1.0, sample_rate=0.0, noise_multiplier=1.0),
            r"`sample_rate` must be in \(0, 1\], got 0.0",
        ),
        (
            dict(clip_norm=1.0, sample_rate=0.1, delta=1.0, noise_multiplier=1.0),
            r"`delta` must be in \(0, 1\), got 1.0",
        ),
        (dict(clip_norm=1.0, sample_rate=0.1), r"exactly one of `noise_multiplier` and `target_epsilon`"),
        (
            dict(clip_norm=1.0, sample_rate=0.1, noise_multiplier=1.0, target_epsilon=1.0, rounds=3),
            r"exactly one of .*got noise_multiplier=1.0 and target_epsilon=1.0",
        ),
        (
            dict(clip_norm=1.0, sample_rate=0.1, noise_multiplier=-1.0),
            r"`noise_multiplier` must be > 0, got -1.0",
        ),
        (
            dict(clip_norm=1.0, sample_rate=0.1, target_epsilon=2.0),
            r"`target_epsilon` needs `rounds`.*got None",
        ),
        (
            dict(clip_norm=1.0, sample_rate=0.1, noise_multiplier=1.0, accountant="gdp"),
            r"`accountant` must be one of \['rdp', 'prv'\], got 'gdp'",
        ),
    ],
)
def test_bad_privacy_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClientDP(**kwargs)


# ------------------------------------------------------------------ in the runner
class _Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _Client(pl.LightningDataModule):
    def __init__(self, cid: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(cid)
        self.x, self.y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
        self.num_samples = 8

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)


class _Logger:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def save(self):
        pass


class _Kill(FederatedCallback):
    def on_round_end(self, simulation, round, metrics):
        if round == 1:
            raise KeyboardInterrupt("killed after round 1")


def _dp(**kw) -> ClientDP:
    return ClientDP(**{"clip_norm": 0.3, "sample_rate": 0.4, "noise_multiplier": 0.8, "seed": 1, **kw})


def _sim(tmp_path=None, **kw) -> FederatedSimulation:
    kw.setdefault("privacy", _dp())
    return FederatedSimulation(
        _Linear(),
        [_Client(c) for c in range(5)],
        rounds=3,
        local_steps=1,
        progress_bar=False,
        checkpoint_dir=tmp_path,
        aggregator=Aggregator(server_optimizer="fedavgm", server_momentum=0.5),
        **kw,
    )


def test_simulation_logs_epsilon_per_round_and_a_resumed_run_continues_the_accounting(tmp_path):
    logger = _Logger()
    full = _sim(logger=logger).fit()
    eps = [epsilon_spent(0.8, 0.4, t, 1e-5) for t in (1, 2, 3)]
    assert [h["privacy"]["epsilon"] for h in full.history] == eps
    assert [m["epsilon"] for _, m in logger.logged] == eps and full.privacy["epsilon"] == eps[-1]
    # the round's participants are the ClientDP's Poisson sample, not fraction_fit's
    assert [h["clients"] for h in full.history] == [_dp().sample_clients(r, 5) for r in range(3)]

    with pytest.raises(KeyboardInterrupt):
        _sim(tmp_path, callbacks=[_Kill()]).fit()
    from lightning_addons.integrity import load_verified

    ckpt = load_verified(tmp_path / "federated_state.pt")  # digest-checked, as the runner reads it
    assert ckpt["round"] == 2 and ckpt["privacy"]["accountant_history"] == [[0.8, 0.4, 2]]
    assert ckpt["privacy"]["history"][-1]["epsilon"] == eps[1]

    resumed = _sim(tmp_path).fit()  # a fresh ClientDP: the accounting comes from the checkpoint
    assert [h["privacy"]["epsilon"] for h in resumed.history] == eps
    assert resumed.privacy["rounds"] == 3.0
    assert all(torch.equal(full.global_state[k], resumed.global_state[k]) for k in full.global_state)


def test_resume_refuses_a_checkpoint_of_another_privacy_mechanism(tmp_path):
    sim = _sim(tmp_path)
    sim.rounds = 1
    sim.fit()
    with pytest.raises(ValueError, match=r"noise_multiplier=0.8, this ClientDP has 1.0"):
        _sim(tmp_path, privacy=_dp(noise_multiplier=1.0)).maybe_resume()
    with pytest.raises(ValueError, match=r"written with client-level DP and this simulation runs without it"):
        _sim(tmp_path, privacy=None).maybe_resume()


def test_privacy_rejects_runner_settings_it_would_override():
    with pytest.raises(ValueError, match=r"Poisson-sampled at `privacy.sample_rate`.*got 0.5 and 1"):
        _sim(fraction_fit=0.5)
    with pytest.raises(ValueError, match=r"the `aggregator` must have clip_norm=None.*got 1.0 and 0.0"):
        FederatedSimulation(_Linear(), [_Client(0)], privacy=_dp(), aggregator=Aggregator(clip_norm=1.0))
    with pytest.raises(ValueError, match=r"a robust `aggregator.rule` would be bypassed.*got 'median'"):
        FederatedSimulation(_Linear(), [_Client(0)], privacy=_dp(), aggregator=Aggregator(rule="median"))
