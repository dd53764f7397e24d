"""Fault injection on the HyperTuner: every fault ends in an exact recovery or a clear error, never in
exit 0 with a changed result. Each test is named after its fault."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "configs" / "tune_digits.yaml"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}}

# the PostgreSQL server fixture of the tuner tests (a conftest is only seen by its own folder)
_spec = importlib.util.spec_from_file_location("_tuner_pg_fixture", ROOT / "tests" / "tuner" / "conftest.py")
_pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pg)
postgres_url = _pg.postgres_url

# A LightningModule that trains in well under a second, unless FAULT_SLOW is set (then each step sleeps);
# FAULT_MARKER receives the trial process's pid and FAULT_STRAGGLER a child process left behind.
TINY = textwrap.dedent("""
    import os, subprocess, time
    from pathlib import Path
    import torch
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.1):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)
            self.lr = lr
            if os.environ.get("FAULT_STRAGGLER"):  # a grandchild in the trial's process group
                p = subprocess.Popen(["sleep", "120"])
                Path(os.environ["FAULT_STRAGGLER"]).write_text(str(p.pid))
            if os.environ.get("FAULT_MARKER"):
                Path(os.environ["FAULT_MARKER"]).write_text(str(os.getpid()))

        def training_step(self, batch, i):
            if os.environ.get("FAULT_SLOW"):
                time.sleep(120)
            x, y = batch
            loss = ((self.lin(x) - y) ** 2).mean()
            self.log("train_loss", loss)
            return loss

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(8, 2, generator=g)
            return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)
""")


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), OMP_NUM_THREADS="1", **extra)
    return env


def _alive(pid: int) -> bool:
    from lightning_addons.tuner.trial import process_alive

    return process_alive(pid)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path.name} was written")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} not written within {timeout} s")
        time.sleep(0.1)
    return int(path.read_text())


def _tiny_tune_config(tmp_path) -> Path:
    (tmp_path / "faulttiny.py").write_text(TINY)
    cfg = {
        "seed_everything": 0,
        "tune": {
            "algorithm": "sobol",
            "n_trials": 1,
            "n_init": 1,
            "mopir": False,
            "study_name": "faults",
            "output_dir": str(tmp_path / "out"),
            "heartbeat_interval": 60,  # a dead worker on this host is found by its pid, not its heartbeat
            "objectives": ["train_loss:min", "time:min"],
            "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1, "default": 0.05}},
        },
        "model": {"class_path": "faulttiny.Tiny"},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 2},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trials(tmp_path, name="faults"):
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    return study.trials


def test_kill_9_of_the_tune_main_process_kills_its_trial_and_a_restart_reaps_and_tops_up(tmp_path):
    config = _tiny_tune_config(tmp_path)
    # `lightning-addons tune ...`, as the console script runs it
    entry = "import sys; from lightning_addons.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "tune", "--config", str(config), "--no_progress"]
    marker = tmp_path / "trial.pid"
    main = subprocess.Popen(
        cmd,
        env=_env(tmp_path, FAULT_SLOW="1", FAULT_MARKER=str(marker)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    trial_pid = _wait_for(marker, main)
    assert trial_pid != main.pid and _alive(trial_pid)
    main.send_signal(signal.SIGKILL)
    main.communicate()
    deadline = time.monotonic() + 5
    while _alive(trial_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(trial_pid), "the trial process outlived the killed `tune` process by 5 s"
    assert [t.state.name for t in _trials(tmp_path)] == ["RUNNING"]

    # restart: the lost trial is failed with its real reason and run again; a straggler the new trial
    # leaves behind is killed with it, so nothing runs beside a later trial
    straggler = tmp_path / "straggler.pid"
    again = subprocess.run(
        cmd, env=_env(tmp_path, FAULT_STRAGGLER=str(straggler)), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming study 'faults'" in again.stderr and "trial 0 is lost and runs again" in again.stderr
    lost, retry = _trials(tmp_path)
    assert lost.state.name == "FAIL" and lost.user_attrs["lost"] is True
    assert re.match(rf"lost: its worker process {main.pid} on .* died", lost.user_attrs["error"])
    assert retry.state.name == "COMPLETE" and retry.params == lost.params
    assert retry.user_attrs["retry_of"] == 0
    assert not _alive(int(straggler.read_text()))


WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from lightning_addons.tuner import HyperTuner

    calls = []

    def fn(p):
        calls.append(p)
        if os.environ.get("FAULT_MARKER") and len(calls) == 2:  # hang in the second trial
            Path(os.environ["FAULT_MARKER"]).write_text(str(os.getpid()))
            time.sleep(120)
        return {"f": (p["x"] - 0.3) ** 2}

    HyperTuner(space={"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}}, objectives=["f:min"],
               trial_fn=fn, algorithm="sobol", n_trials=4, n_init=2, mopir=False, storage=sys.argv[1],
               output_dir=sys.argv[2], heartbeat_interval=60, progress=False).run()
""")


def test_kill_9_of_a_worker_mid_trial_is_reaped_by_the_next_worker_with_its_reason(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    marker = tmp_path / "worker.pid"
    args = [sys.executable, str(script), storage, str(tmp_path)]
    first = subprocess.Popen(
        args, env=_env(tmp_path, FAULT_MARKER=str(marker)), stderr=subprocess.PIPE, text=True
    )
    _wait_for(marker, first)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    # the next worker does not wait for the heartbeat's grace period (60 s here): the pid is gone
    t0 = time.monotonic()
    second = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert time.monotonic() - t0 < 60
    import optuna

    trials = optuna.load_study(study_name="hypertuner", storage=storage).trials
    states = [(t.state.name, bool(t.user_attrs.get("lost"))) for t in trials]
    assert states == [("COMPLETE", False), ("FAIL", True)] + [("COMPLETE", False)] * 3
    assert f"worker process {first.pid}" in trials[1].user_attrs["error"]
    assert trials[2].params == trials[1].params  # the lost trial ran again


def _example(tmp_path, edit) -> dict:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["tune"]["output_dir"] = str(tmp_path / "out")
    edit(cfg)
    return cfg


def _set_max_epochs(cfg):
    cfg["trainer"]["max_epochs"] = -3


def _unknown_class(cfg):
    cfg["model"]["init_args"]["model"]["class_path"] = "LeNet55"


def _mistyped_target(cfg):
    cfg["tune"]["space"]["lr"]["target"] = "model.init_args.lrr"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_unknown_class, r"`model.init_args.model.class_path`: cannot resolve class_path 'LeNet55'"),
        (_set_max_epochs, r"trainer config .* is invalid: .*`max_epochs` must be a non-negative integer"),
        (
            _mistyped_target,
            r"space parameter 'lr': `target` 'model.init_args.lrr' does not exist in the config: "
            r"`model.init_args` has no key 'lrr'; did you mean 'lr'\?",
        ),
    ],
    ids=["unknown_class_path", "max_epochs_-3", "mistyped_target"],
)
def test_config_whose_every_trial_would_fail_is_rejected_before_the_first_trial(tmp_path, edit, match):
    from lightning_addons.tuner.cli import build_tuner

    cfg = _example(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        build_tuner(cfg)  # what `tune` and `tune --print_config` build first
    assert not (tmp_path / "out").exists()  # no study, no trial


def test_trials_failing_alike_stop_the_study_with_that_error_and_leave_no_running_trial(tmp_path):
    import optuna

    from lightning_addons.tuner import HyperTuner

    def broken(p):
        raise RuntimeError(f"CUDA error: device-side assert at x={p['x']:.3f}")

    storage = f"sqlite:///{tmp_path / 's.db'}"
    kw = dict(space=SPACE, objectives=["f:min"], trial_fn=broken, n_init=2, storage=storage, progress=False)
    kw["output_dir"] = tmp_path
    with pytest.raises(
        RuntimeError, match=r"the last 3 trials failed with the same error: RuntimeError: CUDA"
    ):
        HyperTuner(n_trials=10, **kw).run()
    states = [t.state.name for t in optuna.load_study(study_name="hypertuner", storage=storage).trials]
    assert states == ["FAIL"] * 3
    # without the limit ADUMBO keeps proposing past its initial design with no success to model
    res = HyperTuner(n_trials=6, max_consecutive_failures=None, study_name="nolimit", **kw).run()
    assert [h["state"] for h in res.history] == ["FAIL"] * 6
    assert len({h["params"]["x"] for h in res.history}) == 6


def _race_worker_script(tmp_path) -> Path:
    script = tmp_path / "race.py"
    script.write_text(
        textwrap.dedent("""
        import sys, time
        from pathlib import Path
        import optuna, psycopg2, sqlalchemy  # noqa: F401 - imported before the start line
        from lightning_addons.tuner import HyperTuner
        from lightning_addons.tuner import sampler  # noqa: F401
        tuner = HyperTuner(space={"x": {"type": "float", "low": 0.0, "high": 1.0}}, objectives=["f:min"],
                           trial_fn=lambda p: {"f": p["x"]}, algorithm="sobol", n_trials=4, mopir=False,
                           storage=sys.argv[1], output_dir=sys.argv[3], study_name="race", progress=False)
        # start line: every worker has imported everything, then all start at the same instant
        barrier = Path(sys.argv[2])
        (barrier / Path(sys.argv[3]).name).touch()
        while len(list(barrier.iterdir())) < int(sys.argv[4]):
            time.sleep(0.001)
        tuner.run()
    """)
    )
    return script


def test_workers_starting_at_once_on_an_empty_postgres_database_all_run(postgres_url, tmp_path):
    import optuna
    import psycopg2

    m = re.match(r".*@([^:]+):(\d+)/\w+$", postgres_url)
    conn = psycopg2.connect(host=m[1], port=int(m[2]), user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE race_empty")
    conn.close()
    url = postgres_url.rsplit("/", 1)[0] + "/race_empty"
    script = _race_worker_script(tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(barrier), str(tmp_path / f"w{i}"), "2"],
            env=_env(tmp_path),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="race", storage=url).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 4
    assert not [t for t in trials if t.state.name == "RUNNING"]


def _read_only_dir(tmp_path) -> Path:
    """A folder this process cannot write: a chmod-ed one, or (as root, who ignores modes) /sys."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_text("")
    except OSError:
        return ro
    (ro / "probe").unlink()
    if not Path("/sys").is_dir():
        pytest.skip("no read-only folder available")
    return Path("/sys") / "hypertuner-faults"


def test_read_only_storage_path_is_an_error_naming_the_path_before_any_trial(tmp_path):
    from lightning_addons.tuner import HyperTuner

    ro = _read_only_dir(tmp_path)
    calls = []
    tuner = HyperTuner(
        space=SPACE,
        objectives=["f:min"],
        trial_fn=lambda p: calls.append(p) or {"f": p["x"]},
        storage=f"sqlite:///{ro / 'study.db'}",
        output_dir=tmp_path / "out",
        progress=False,
    )
    with pytest.raises(
        PermissionError, match=rf"SQLite `storage` '{re.escape(f'sqlite:///{ro}')}.*not writable"
    ):
        tuner.run()
    out = HyperTuner(
        space=SPACE, objectives=["f:min"], trial_fn=lambda p: {"f": 0}, output_dir=ro / "out", progress=False
    )
    with pytest.raises(
        PermissionError, match=rf"`output_dir` '{re.escape(str(ro / 'out'))}' is not writable"
    ):
        out.run()
    assert calls == []


@pytest.mark.parametrize("damage", ["intact", "torn", "bit_flip", "other_trial"])
def test_result_file_of_a_trial_whose_worker_died_is_recovered_only_if_intact(tmp_path, damage):
    import optuna

    from lightning_addons.tuner import HyperTuner
    from lightning_addons.tuner.trial import write_result
    from lightning_addons.tuner.tuner import PROCESS_ATTR, WORKER_ATTR, _host_id

    storage = f"sqlite:///{tmp_path / 's.db'}"

    def tuner():
        return HyperTuner(
            space=SPACE,
            objectives=["f:min", "time:min"],
            trial_fn=lambda p: {"f": p["x"]},
            algorithm="sobol",
            n_trials=2,
            mopir=False,
            storage=storage,
            output_dir=tmp_path,
            progress=False,
        )

    study = tuner().create_study()
    # a worker that died after its trial process wrote the result, before the result was recorded
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    result = tmp_path / "trial_0_result.json"
    write_result(result, {"status": "ok", "metrics": {"f": 0.25}, "time": 3.5, "energy": 1.0, "token": "t0"})
    data = bytearray(result.read_bytes())
    if damage == "torn":
        data = data[: len(data) // 2]
    elif damage == "bit_flip":
        data[data.index(b"0.25") + 2] ^= 0x02  # 0.25 -> 0.05
    result.write_bytes(bytes(data))
    study._storage.set_trial_system_attr(
        trial._trial_id, WORKER_ATTR, {"host": _host_id(), "pid": int(dead.stdout), "start": None}
    )
    token = "t1" if damage == "other_trial" else "t0"  # another study's trial 0 wrote the file
    study._storage.set_trial_system_attr(
        trial._trial_id, PROCESS_ATTR, {"pid": None, "result": str(result), "token": token}
    )

    res = tuner().run()
    first = res.history[0]
    if damage == "intact":
        assert first["state"] == "COMPLETE" and first["values"] == {"f": 0.25, "time": 3.5}
        assert [h["state"] for h in res.history] == ["COMPLETE", "COMPLETE"]
    else:
        assert first["state"] == "FAIL" and first["lost"] and first["values"]["f"] is None
        if damage == "other_trial":
            assert f"trial result file {str(result)!r} belongs to another trial" in first["error"]
        else:
            assert f"trial result file {str(result)!r} is corrupt or torn" in first["error"]
            assert "digest" in first["error"]
        assert [h["state"] for h in res.history] == ["FAIL", "COMPLETE", "COMPLETE"]  # topped up


def test_storage_failure_names_the_storage_and_leaves_no_running_trial(tmp_path, monkeypatch):
    import optuna
    from optuna.storages import RDBStorage

    from lightning_addons.tuner import HyperTuner

    storage = f"sqlite:///{tmp_path / 's.db'}"
    kw = dict(space=SPACE, objectives=["f:min"], trial_fn=lambda p: {"f": p["x"]}, algorithm="sobol")
    kw.update(n_trials=3, mopir=False, storage=storage, output_dir=tmp_path, progress=False)
    real = RDBStorage.set_trial_state_values
    full = optuna.exceptions.StorageInternalError("(sqlite3.OperationalError) database or disk is full")

    def values_do_not_fit(self, trial_id, state, values=None):
        if values is not None:  # the disk has room for a state change, not for the values
            raise full
        return real(self, trial_id, state, values)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", values_do_not_fit)
    with pytest.raises(
        RuntimeError,
        match=rf"study storage {re.escape(storage)} failed while recording trials: StorageInternalError: "
        r".*disk is full.*Check that its disk is not full.* Trial 0 was marked failed",
    ):
        HyperTuner(**kw).run()

    def nothing_fits(self, trial_id, state, values=None):
        raise full

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", nothing_fits)
    with pytest.raises(RuntimeError, match=r"Trial 1 could not be marked failed; the next start reaps it"):
        HyperTuner(**kw).run()
    monkeypatch.setattr(RDBStorage, "set_trial_state_values", real)
    res = HyperTuner(**kw).run()  # the disk has room again
    states = [(h["state"], h["lost"]) for h in res.history]
    assert states == [("FAIL", False), ("FAIL", True), ("COMPLETE", False), ("COMPLETE", False)]
    assert "disk is full" in res.history[0]["error"]
    assert "left it running" in res.history[1]["error"]
    study = optuna.load_study(study_name="hypertuner", storage=storage)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def test_resuming_a_study_with_another_config_is_refused_naming_the_keys(tmp_path, caplog):
    from lightning_addons.tuner import HyperTuner

    def make(**over):
        kw = dict(space=SPACE, objectives=["f:min"], trial_fn=lambda p: {"f": p["x"]}, algorithm="sobol")
        kw.update(n_trials=2, mopir=False, storage=f"sqlite:///{tmp_path / 's.db'}", progress=False)
        kw.update(output_dir=tmp_path)
        kw.update(over)
        return HyperTuner(**kw)

    make().run()
    space = {"x": {"type": "float", "low": 0.0, "high": 2.0, "default": 0.5}}
    with pytest.raises(
        ValueError,
        match=r"created with a different configuration; differing keys: objectives\[0\].direction "
        r"\(stored 'minimize', now 'maximize'\); space.x.high \(stored 1.0, now 2.0\)\..*another `study_name`",
    ):
        make(space=space, objectives=["f:max"], n_trials=3).run()
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightning_addons.tuner"):
        res = make(n_trials=3).run()  # more trials is no other config
    assert len(res.history) == 3
    assert any(
        r.levelname == "WARNING" and "resuming study 'hypertuner'" in r.message for r in caplog.records
    )
