"""Federated faults, each ending in an exact recovery or a clear error (never exit 0 with a changed result).

Process faults (kill -9, a resume that must fail) run the tiny world of ``_faults_fl_world.py`` in a
subprocess; the reference runs in this process (CPU, one thread: bit-identical across processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _faults_fl_world import make_simulation  # noqa: E402

from lightning_addons.federated import FederatedSimulation, ResumeMismatchError  # noqa: E402
from lightning_addons.integrity import IntegrityError  # noqa: E402
from lightning_addons.strategies import Aggregator  # noqa: E402

SCRIPT = str(Path(__file__).with_name("_faults_fl_world.py"))
ROUNDS = 4


def _run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run (seed 0, alpha 0.5, lr 0.1, FedAvgM) and its checkpoint folder."""
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"faults_fl_ref_{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    result = make_simulation(folder, rounds=ROUNDS).fit()
    yield result, folder
    shutil.rmtree(folder, ignore_errors=True)


def test_kill_9_mid_round_then_resume_recovers_exactly(reference, tmp_path):
    ref, _ = reference
    ckpt, out, marker = tmp_path / "ckpt", tmp_path / "out.pt", tmp_path / "marker"
    proc = subprocess.Popen(
        [
            sys.executable,
            SCRIPT,
            "--ckpt",
            str(ckpt),
            "--out",
            str(out),
            "--rounds",
            str(ROUNDS),
            "--hang-round",
            "2",
            "--marker",
            str(marker),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.txt").open(
            "w"
        ),  # a file, not a pipe nobody reads (it would fill and block)
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "the run never reached round 2"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-round 2: rounds 0 and 1 are checkpointed
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert not [p for p in ckpt.iterdir() if p.name != "federated_state.pt"]  # no temp file left behind

    done = _run_script("--ckpt", str(ckpt), "--out", str(out), "--rounds", str(ROUNDS))
    assert done.returncode == 0, done.stderr
    assert "Resuming the federated run" in done.stderr and "after round 2 of 4" in done.stderr
    resumed = torch.load(out, weights_only=True)
    assert resumed["rounds"] == list(range(ROUNDS))
    assert _equal(resumed["global_state"], ref.global_state)  # bit-identical to the uninterrupted run


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"seed": 1}, "federation.seed"),
        ({"alpha": 0.1}, "partition.alpha"),
        ({"lr": 0.003}, "module.hparams.lr"),
    ],
)
def test_resume_with_another_config_is_refused_naming_the_keys(reference, tmp_path, change, key):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    before = (ckpt / "federated_state.pt").read_bytes()
    sim = make_simulation(ckpt, rounds=ROUNDS, **change)
    with pytest.raises(ResumeMismatchError, match=rf"Differing keys: .*{key}.*--no-resume.*resume=False"):
        sim.fit()
    assert (ckpt / "federated_state.pt").read_bytes() == before  # nothing overwritten
    fresh = make_simulation(ckpt, rounds=ROUNDS, **change).fit(resume=False)
    expected = make_simulation(None, rounds=ROUNDS, **change).fit()
    assert _equal(fresh.global_state, expected.global_state)


def test_resume_with_another_seed_exits_non_zero_with_the_fix_in_the_message(reference, tmp_path):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    out = tmp_path / "out.pt"
    proc = _run_script("--ckpt", str(ckpt), "--out", str(out), "--seed", "1")
    assert proc.returncode != 0 and not out.exists()
    assert "ResumeMismatchError" in proc.stderr and "federation.seed: checkpoint 0, now 1" in proc.stderr
    assert "--no-resume" in proc.stderr


def test_checkpoint_from_another_model_is_refused(reference, tmp_path):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    with pytest.raises(ResumeMismatchError, match=r"module.hparams.hidden.*module.initial_state"):
        make_simulation(ckpt, rounds=ROUNDS, hidden=4).fit()


def test_resume_with_fewer_rounds_than_the_checkpoint_holds_is_refused(reference, tmp_path):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    with pytest.raises(ResumeMismatchError, match=r"it holds 4 finished rounds, this run asks for rounds=2"):
        make_simulation(ckpt, rounds=2).fit()


def _flip_bit_in_tensor_data(path: Path) -> None:
    """Flip the top exponent bit of the first float32 of the largest tensor record of a torch zip file."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = (
        int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + 3] ^= 0x40  # the exponent's top bit of a little-endian float32: |x| ~ 1 becomes ~1e38
    path.write_bytes(bytes(raw))


def test_flipped_bit_in_a_federated_round_checkpoint_is_a_clear_error(reference, tmp_path):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    _flip_bit_in_tensor_data(ckpt / "federated_state.pt")
    torch.load(ckpt / "federated_state.pt", weights_only=True)  # torch alone loads it silently
    with pytest.raises(
        IntegrityError, match=r"federated_state.pt' is corrupt: its content digest .*--no-resume"
    ):
        make_simulation(ckpt, rounds=ROUNDS).fit()


def test_torn_write_of_a_federated_checkpoint_is_a_clear_error(reference, tmp_path):
    _, folder = reference
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    path = ckpt / "federated_state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        IntegrityError, match=r"federated_state.pt' cannot be read .*truncated or corrupt.*--no-resume"
    ):
        make_simulation(ckpt, rounds=ROUNDS).fit()


class _Attacked(FederatedSimulation):
    """Client 1 sends a tampered update every round; ``attack=None`` drops it (the honest reference)."""

    attack = None

    def train_client(self, round, client):
        state, n = super().train_client(round, client)
        if client == 1:
            if self.attack is None:
                raise RuntimeError("client 1 offline")
            state = type(self).attack(self.global_state, state)
        return state, n


def _scaled(g, s):
    return {k: g[k] + (s[k] - g[k]) * 1e6 for k in s}


def _float64_huge(g, s):
    return {k: torch.full_like(s[k], 1e300, dtype=torch.float64) for k in s}


def _float16(g, s):
    return {k: s[k].half() for k in s}


@pytest.mark.parametrize(
    ("attack", "reason"),
    [(_scaled, "norm_outlier"), (_float64_huge, "dtype"), (_float16, "dtype")],
    ids=["update_1e6x", "float64_1e300", "float16"],
)
def test_one_client_sending_a_bad_update_is_rejected_and_the_run_equals_the_run_without_it(
    attack, reason, caplog
):
    honest = make_simulation(None, rounds=2, cls=_Attacked).fit()

    class Sim(_Attacked):
        pass

    Sim.attack = staticmethod(attack)
    with caplog.at_level("WARNING"):
        result = make_simulation(None, rounds=2, cls=Sim).fit()
    assert _equal(result.global_state, honest.global_state)
    for record in result.history:
        assert [(r["client"], r["reason"]) for r in record["rejected"]] == [(1, reason)]
    assert "client 1, key" in caplog.text and reason in caplog.text
    assert max(float(v.abs().max()) for v in result.global_state.values()) < 100


def test_rejections_are_logged_as_metrics(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    class Sim(_Attacked):
        attack = staticmethod(_scaled)

    sim = make_simulation(None, rounds=2, cls=Sim)
    sim.logger = CSVLogger(tmp_path, name="fl")
    sim.fit()
    text = (tmp_path / "fl" / "version_0" / "metrics.csv").read_text()
    header, *rows = text.strip().splitlines()
    cols = header.split(",")
    assert "rejected_updates" in cols and "rejected_norm_outlier" in cols
    assert [
        float(r.split(",")[cols.index("rejected_norm_outlier")])
        for r in rows
        if r.split(",")[cols.index("rejected_norm_outlier")]
    ] == [1.0, 1.0]


def test_fedavgm_under_a_huge_update_stays_finite_without_the_guard():
    class Sim(_Attacked):
        attack = staticmethod(_scaled)

    agg = Aggregator(server_optimizer="fedavgm", max_norm_ratio=None)
    result = make_simulation(None, rounds=3, cls=Sim, aggregator=agg).fit()
    assert all(torch.isfinite(v).all() for v in result.global_state.values())
