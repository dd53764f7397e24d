"""The aggregation core: exact FedAvg maths, server optimisers, clipping/noise, invalid-update rejection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_addons.strategies import (
    Aggregator,
    InvalidClientUpdate,
    ServerOptimizer,
    add_gaussian_noise,
    clip_update,
    get_federated_state,
    load_federated_state,
    mean,
    weighted_average,
)


def _states(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)} for _ in range(n)]


def test_equal_weights_give_the_plain_mean():
    states = _states(5)
    out = weighted_average(states, [7, 7, 7, 7, 7])
    for k in ("w", "b"):
        stacked = torch.stack([s[k] for s in states])
        # bit-identical to the float64 mean (the accumulation precision), within float32 rounding of the float32 mean
        assert torch.equal(out[k], stacked.double().mean(0).float())
        torch.testing.assert_close(out[k], stacked.mean(0))
    torch.testing.assert_close(mean(states)["w"], out["w"], rtol=0, atol=0)


def test_weighted_average_matches_numpy_reference():
    states = _states(3)
    w = [10, 30, 60]
    out = weighted_average(states, w)
    ref = sum(wi * s["w"].double() for wi, s in zip(w, states)) / sum(w)
    torch.testing.assert_close(out["w"], ref.float())
    assert out["w"].dtype == torch.float32


def test_weighted_average_keeps_half_precision_dtype():
    states = [{"w": torch.ones(2, dtype=torch.float16)}, {"w": torch.zeros(2, dtype=torch.float16)}]
    assert weighted_average(states, [1, 1])["w"].dtype == torch.float16


def test_single_update_is_returned_unchanged():
    (s,) = _states(1)
    out = Aggregator().aggregate({k: torch.zeros_like(v) for k, v in s.items()}, [s], [123])
    assert all(torch.equal(out[k], s[k]) for k in s)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"w": torch.full((4, 3), float("nan")), "b": torch.zeros(3)}, r"client 1 .*'w'.* non-finite"),
        (
            {"w": torch.zeros(3, 4), "b": torch.zeros(3)},
            r"client 1 .*'w'.* shape \(3, 4\), expected \(4, 3\)",
        ),
        ({"w": torch.zeros(4, 3)}, r"client 1 .*missing \['b'\]"),
    ],
)
def test_invalid_update_is_rejected_with_a_clear_error(bad, match):
    good = _states(1)[0]
    with pytest.raises(InvalidClientUpdate, match=match):
        Aggregator().aggregate(good, [good, bad], [1, 1])


def test_bad_weights_are_rejected():
    states = _states(2)
    with pytest.raises(ValueError, match=r"`weights` has 1 entries for 2"):
        weighted_average(states, [1])
    with pytest.raises(ValueError, match=r"`weights` must be finite, non-negative"):
        weighted_average(states, [-1, 2])
    with pytest.raises(ValueError, match="empty list"):
        weighted_average([], [])


def test_aggregator_arguments_are_validated():
    with pytest.raises(ValueError, match=r"`weighting` must be one of \['num_samples', 'uniform'\], got 'x'"):
        Aggregator(weighting="x")
    with pytest.raises(ValueError, match=r"`server_optimizer` must be one of .*got 'sgd'"):
        Aggregator(server_optimizer="sgd")
    with pytest.raises(ValueError, match="needs `clip_norm`"):
        Aggregator(noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"`clip_norm` must be > 0"):
        Aggregator(clip_norm=0.0)
    with pytest.raises(ValueError, match=r"`server_momentum` must be in \[0, 1\)"):
        ServerOptimizer("fedavgm", momentum=1.5)


def test_uniform_weighting_ignores_sample_counts():
    states = _states(2)
    g = {k: torch.zeros_like(v) for k, v in states[0].items()}
    out = Aggregator(weighting="uniform").aggregate(g, states, [1, 1000])
    torch.testing.assert_close(out["w"], (states[0]["w"] + states[1]["w"]) / 2)


def test_fedavgm_with_zero_momentum_and_unit_lr_is_fedavg():
    states = _states(3)
    g = {k: torch.zeros_like(v) for k, v in states[0].items()}
    plain = Aggregator().aggregate(g, states, [1, 2, 3])
    m0 = Aggregator(server_optimizer="fedavgm", server_momentum=0.0).aggregate(g, states, [1, 2, 3])
    torch.testing.assert_close(m0["w"], plain["w"])


def test_fedavgm_accumulates_momentum_across_rounds():
    opt = ServerOptimizer("fedavgm", lr=1.0, momentum=0.5)
    x = {"w": torch.tensor([0.0])}
    x = opt.step(x, {"w": torch.tensor([-1.0])})  # g = 1 -> m = 1 -> x = -1
    x = opt.step(x, {"w": torch.tensor([-2.0])})  # g = 1 -> m = 1.5 -> x = -2.5
    assert x["w"].item() == pytest.approx(-2.5)


def test_fedadam_matches_hand_computed_step():
    opt = ServerOptimizer("fedadam", lr=0.1, betas=(0.9, 0.99), eps=1e-3)
    out = opt.step({"w": torch.tensor([1.0])}, {"w": torch.tensor([0.0])})
    m, v = 0.1 * 1.0, 0.01 * 1.0
    assert out["w"].item() == pytest.approx(1.0 - 0.1 * m / (v**0.5 + 1e-3), rel=1e-6)


def test_server_optimizer_state_round_trips():
    a = ServerOptimizer("fedadam")
    a.step({"w": torch.ones(2)}, {"w": torch.zeros(2)})
    b = ServerOptimizer("fedadam")
    b.load_state_dict(a.state_dict())
    x, avg = {"w": torch.ones(2)}, {"w": torch.full((2,), 0.5)}
    assert torch.equal(a.step(x, avg)["w"], b.step(x, avg)["w"])


def test_clipping_bounds_each_client_update():
    clipped, norm = clip_update({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, 1.0)
    assert norm == pytest.approx(5.0)
    assert torch.cat([clipped["a"], clipped["b"]]).norm().item() == pytest.approx(1.0)
    g = {"w": torch.zeros(2)}
    out = Aggregator(clip_norm=0.5).aggregate(g, [{"w": torch.tensor([3.0, 4.0])}], [1])
    assert out["w"].norm().item() == pytest.approx(0.5)


def test_noise_is_seeded_and_scaled():
    g = {"w": torch.zeros(20000)}
    upd = [{"w": torch.zeros(20000)}] * 4
    a = Aggregator(clip_norm=2.0, noise_multiplier=1.0, seed=3).aggregate(g, upd, [1] * 4)
    b = Aggregator(clip_norm=2.0, noise_multiplier=1.0, seed=3).aggregate(g, upd, [1] * 4)
    assert torch.equal(a["w"], b["w"])
    assert a["w"].std().item() == pytest.approx(2.0 * 1.0 / 4, rel=0.05)
    assert torch.equal(add_gaussian_noise(g, 0.0, torch.Generator())["w"], g["w"])


def test_fallback_contract_federates_only_trainable_parameters():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    state = get_federated_state(net)
    assert sorted(state) == ["1.bias", "1.weight"]
    load_federated_state(net, {k: torch.zeros_like(v) for k, v in state.items()})
    assert float(net[1].weight.detach().abs().sum()) == 0.0


def test_custom_contract_is_used_when_present():
    class Cache(nn.Module):
        def __init__(self):
            super().__init__()
            self.keys = nn.Parameter(torch.randn(6, 4))
            self.other = nn.Parameter(torch.randn(2))

        def federated_state_dict(self):
            return {"keys": self.keys.detach()}

        def load_federated_state_dict(self, sd):
            self.keys.data.copy_(sd["keys"])

    m = Cache()
    assert list(get_federated_state(m)) == ["keys"]
    with pytest.raises(ValueError, match=r"federated state\['keys'\] has shape \(2, 2\), expected \(6, 4\)"):
        load_federated_state(m, {"keys": torch.zeros(2, 2)})


def test_module_without_trainable_state_is_rejected():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="has no federated state"):
        get_federated_state(net)
