"""Running one trial: objectives, config instantiation, system knobs, and the trial runners.

A Lightning trial runs in a fresh Python subprocess (``python -m lightning_addons.tuner.trial SPEC OUT``)
so that per-process knobs (torch threads, interop threads, ``OMP_NUM_THREADS``, matmul precision,
``torch.compile``) are applied before any training starts and cannot leak into the next trial.

A trial process cannot outlive the process that started it: it runs in its own process group (so its
dataloader workers are killed with it), asks Linux for ``SIGKILL`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``) and runs a watchdog thread that kills its process group when its parent
changes (the same guarantee off Linux). Its result file carries a SHA-256 digest of its content,
verified on load (:func:`read_result`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_addons.energy.meters import DEFAULT_WATTS_PER_CORE, ENERGY_SOURCES, CPUTimeMeter
from lightning_addons.resolve import instantiate, resolve_class  # noqa: F401  (the one resolver)
from lightning_addons.tuner._pareto import check_directions

#: Objective names measured by the tuner itself rather than logged by the module.
BUILTIN_OBJECTIVES = {"time": "training wall time of `fit` in seconds", "energy": "energy of `fit` in joules"}


@dataclass
class Objective:
    """One objective: a logged metric (``val_acc``), ``time`` (fit wall seconds) or ``energy`` (joules).

    Args:
        name: metric name as logged with ``self.log`` (read from ``trainer.callback_metrics`` after fit)
            or ``"time"`` / ``"energy"``.
        direction: ``"min"``/``"minimize"`` or ``"max"``/``"maximize"``.
        log_scale: model it on a log scale (default: True for time and energy).

    Raises:
        ValueError: empty name or bad direction.

    Examples:
        >>> Objective.parse("val_acc:max")
        Objective(name='val_acc', direction='maximize', log_scale=False)
    """

    name: str
    direction: str = "minimize"
    log_scale: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"objective `name` must be a non-empty string, got {self.name!r}.")
        self.direction = check_directions([self.direction])[0]
        if self.log_scale is None:
            self.log_scale = self.name in BUILTIN_OBJECTIVES

    @classmethod
    def parse(cls, spec: Objective | str | Mapping[str, Any]) -> Objective:
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, str):
            name, _, direction = spec.partition(":")
            if not direction:
                direction = "minimize" if name in BUILTIN_OBJECTIVES or "loss" in name else "maximize"
            return cls(name, direction)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"name", "direction", "log_scale"}
            if unknown:
                raise ValueError(
                    f"objective spec has unknown keys {sorted(unknown)}; allowed: name, direction, log_scale."
                )
            return cls(**dict(spec))
        raise ValueError(f"an objective must be 'name:min|max', a mapping or an Objective, got {spec!r}.")


def parse_objectives(specs: Sequence[Any]) -> list[Objective]:
    if isinstance(specs, (str, Mapping, Objective)):
        specs = [specs]
    objs = [Objective.parse(s) for s in (specs or [])]
    if not objs:
        raise ValueError(
            "`objectives` must name at least one objective (e.g. ['val_acc:max', 'time:min']), got none."
        )
    names = [o.name for o in objs]
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be unique, got {names}.")
    return objs


# ----------------------------------------------------------------------------- config helpers
def set_path(cfg: dict, path: str, value: Any) -> None:
    """Set ``cfg["a"]["b"]["c"] = value`` for ``path="a.b.c"``, creating dicts on the way."""
    keys = path.split(".")
    node = cfg
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def class_config(obj: Any, args: Mapping[str, Any] | None = None) -> dict | None:
    """A ``{class_path, init_args}`` dict from a class (plus args) or a dict (returned copied)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return copy.deepcopy(dict(obj))
    if isinstance(obj, type):
        if obj.__module__ == "__main__":
            raise ValueError(
                f"{obj.__qualname__} is defined in __main__, which a trial subprocess cannot import: move it to a "
                "module (or pass {class_path: 'package.module.Class', init_args: ...})."
            )
        return {"class_path": f"{obj.__module__}.{obj.__qualname__}", "init_args": dict(args or {})}
    raise ValueError(f"expected a class or a {{class_path, init_args}} mapping, got {type(obj).__name__}.")


# ----------------------------------------------------------------------------- the trial process
def apply_process_knobs(system: Mapping[str, Any]) -> None:
    """Knobs that must be set in the trial process before training (threads, matmul precision)."""
    import torch

    if "interop_threads" in system:
        try:
            torch.set_num_interop_threads(int(system["interop_threads"]))
        except RuntimeError as err:  # already started parallel work
            raise RuntimeError(
                f"interop_threads={system['interop_threads']} could not be set: {err}"
            ) from err
    if "torch_threads" in system:
        torch.set_num_threads(int(system["torch_threads"]))
    if "matmul_precision" in system:
        torch.set_float32_matmul_precision(str(system["matmul_precision"]))


def build_trial_config(
    base: Mapping[str, Any], params: Mapping[str, Any], targets: Mapping[str, str]
) -> dict:
    """Write model parameters to their targets and trainer/data system knobs to their places."""
    cfg = copy.deepcopy(dict(base))
    for name, value in params.items():
        if name in targets:
            set_path(cfg, targets[name], value)
    return cfg


def run_lightning_trial(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Build and fit one trial in this process; returns metrics, time, energy (with source)."""
    system = dict(spec.get("system", {}))
    apply_process_knobs(system)
    import lightning.pytorch as pl
    import torch

    from lightning_addons.callbacks.energy import EnergyMeter

    cfg = spec["config"]
    if cfg.get("seed_everything") is not None:
        pl.seed_everything(int(cfg["seed_everything"]), workers=True)
    model = instantiate(cfg["model"])
    data = instantiate(cfg["data"]) if cfg.get("data") else None
    if system.get("compile"):
        model = torch.compile(model)
    tcfg = dict(cfg.get("trainer") or {})
    callbacks = instantiate(tcfg.pop("callbacks", []) or [])
    meter = EnergyMeter(
        source=spec.get("energy_source", "auto"),
        watts_per_core=float(spec.get("watts_per_core", DEFAULT_WATTS_PER_CORE)),
    )
    for key, default in (
        ("logger", False),
        ("enable_checkpointing", False),
        ("enable_progress_bar", False),
        ("enable_model_summary", False),
    ):
        tcfg.setdefault(key, default)
    if isinstance(tcfg.get("logger"), (dict, list)):
        tcfg["logger"] = instantiate(tcfg["logger"])
    extra = [meter]
    if spec.get("progress"):
        extra.append(_progress_callback(spec["progress"], meter))
    trainer = pl.Trainer(callbacks=[*callbacks, *extra], **tcfg)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data) if data is not None else trainer.fit(model)
    wall = time.perf_counter() - t0
    metrics = {}
    for k, v in trainer.callback_metrics.items():
        try:
            metrics[k] = float(v)
        except (TypeError, ValueError, RuntimeError):
            continue
    applied = {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "precision": str(trainer.precision),
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "compile": not isinstance(model, pl.LightningModule),
    }
    for key in ("batch_size", "num_workers"):
        if data is not None and hasattr(data, key):
            applied[key] = getattr(data, key)
    result = {
        "status": "ok",
        "metrics": metrics,
        "time": wall,
        "energy": meter.energy_joules,
        "energy_source": meter.source,
        "applied": applied,
    }
    bad = [k for k, v in metrics.items() if "loss" in k and not math.isfinite(v)]
    if bad:
        result.update(status="fail", error=f"non-finite loss: {', '.join(bad)}")
    return result


def _float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


def _progress_callback(path: str | os.PathLike, meter: Any) -> Any:
    """A Lightning callback appending one JSON line per validation (sanity check aside) to ``path``:
    ``{"step": n, "metrics": {...}, "time": fit wall seconds so far, "energy": joules so far}``. The tuner
    reads the lines while the trial runs and may stop it (early stopping, see :mod:`.pruners`)."""
    import lightning.pytorch as pl

    class _Progress(pl.Callback):
        def __init__(self) -> None:
            self.step = 0
            self.t0 = time.perf_counter()

        def on_fit_start(self, trainer, pl_module) -> None:
            self.t0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            self.step += 1
            meter._update()  # the energy used so far
            line = {
                "step": self.step,
                "metrics": _float_metrics(trainer.callback_metrics),
                "time": time.perf_counter() - self.t0,
                "energy": float(meter.energy_joules),
                "energy_source": meter.source,
            }
            with open(path, "a") as f:
                f.write(json.dumps(line, default=float) + "\n")
                f.flush()

    return _Progress()


def _main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - runs in the trial subprocess
    argv = list(sys.argv[1:] if argv is None else argv)
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _start_parent_watchdog(int(parent))
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = run_lightning_trial(spec)
    except BaseException as err:  # noqa: BLE001 - every failure is reported, not raised
        oom = "out of memory" in str(err).lower()
        result = {
            "status": "fail",
            "error": f"{'OOM: ' if oom else ''}{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=20),
        }
    result["token"] = spec.get("token")  # ties the result file to the trial that asked for it
    write_result(argv[1], result)


# ----------------------------------------------------------------------------- result files, processes
_DIGEST_PREFIX = b"sha256:"
#: Environment variable holding the pid of the process that started a trial (read by the trial's watchdog).
PARENT_ENV = "LIGHTNING_ADDONS_TRIAL_PARENT"


def write_result(path: str | os.PathLike, result: Mapping[str, Any]) -> Path:
    """Write a trial result atomically as ``sha256:<hex digest of the payload>\\n<JSON payload>``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = write_result(pathlib.Path(tempfile.mkdtemp()) / "r.json", {"status": "ok", "time": 1.5})
        >>> read_result(p)["time"]
        1.5
    """
    path = Path(path)
    payload = json.dumps(dict(result), default=float).encode()
    data = _DIGEST_PREFIX + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a result file written by :func:`write_result`, verifying its digest.

    Raises:
        ValueError: the file is torn (truncated), corrupt (digest mismatch, e.g. a flipped bit) or not a
            result file; the message names the file.
    """
    path = Path(path)
    data = path.read_bytes()
    head, sep, payload = data.partition(b"\n")
    if not sep or not head.startswith(_DIGEST_PREFIX):
        raise ValueError(
            f"trial result file {str(path)!r} is corrupt or torn: it must start with 'sha256:<digest>' and "
            f"a newline ({len(data)} bytes read); the result is not used."
        )
    want = head[len(_DIGEST_PREFIX) :].decode("ascii", "replace")
    got = hashlib.sha256(payload).hexdigest()
    if got != want:
        raise ValueError(
            f"trial result file {str(path)!r} is corrupt or torn: its SHA-256 digest {got} does not match the "
            f"recorded {want} ({len(payload)} payload bytes); the result is not used."
        )
    result = json.loads(payload)
    if not isinstance(result, dict) or "status" not in result:
        raise ValueError(f"trial result file {str(path)!r} holds no trial result (no `status` key).")
    return result


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``), None where unknown.

    With the pid it identifies a process even after its pid is reused.
    """
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``start``, see :func:`process_start_time`) still runs.

    A zombie counts as dead; so does a live process with another start time (the pid was reused).
    """
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def kill_process_group(pid: int, start: str | None = None, wait: float = 10.0) -> bool:
    """SIGKILL the process group led by ``pid`` (a trial process) and wait up to ``wait`` seconds for the
    leader to be gone; True when it is gone."""
    if start is not None and not process_alive(pid, start):
        return True
    try:
        os.killpg(int(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + wait
    while process_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


_PRCTL: Any = None


def _prctl():
    """libc's ``prctl`` resolved in the parent (before any fork), or None off Linux/glibc."""
    global _PRCTL
    if _PRCTL is None:
        _PRCTL = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                _PRCTL = False
    return _PRCTL or None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """``preexec_fn`` of a trial process: SIGKILL when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    prctl = _prctl()

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        if prctl is not None:
            prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(137)

    return preexec


def _start_parent_watchdog(parent: int, interval: float = 0.5) -> None:  # pragma: no cover - trial process
    """Kill this process's group as soon as its parent changes (the parent died): the portable twin of
    ``PR_SET_PDEATHSIG``, which also takes the dataloader workers along."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="trial-parent-watchdog", daemon=True).start()


# ----------------------------------------------------------------------------- runners
def _check_energy_source(source: str) -> str:
    if source not in ENERGY_SOURCES:
        raise ValueError(f"`energy_source` must be one of {list(ENERGY_SOURCES)}, got {source!r}.")
    return source


class TrialRunner:
    """Runs one configuration and returns ``{"status", "metrics", "time", "energy", "energy_source", "error"}``."""

    def __call__(self, params: dict[str, Any], trial_number: int) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def _takes_report(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a second positional argument (``fn(params, report)``)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    pos = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(pos) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())


class FunctionTrialRunner(TrialRunner):
    """In-process runner for a Python function ``fn(params) -> {metric: value}`` (cheap objectives, tests).

    ``time`` is the function's wall time and ``energy`` the CPU-time estimate unless ``fn`` returns them.
    Exceptions and non-finite values are reported as failed trials.

    A function ``fn(params, report)`` may call ``report(step, {metric: value})`` after each epoch (steps
    1, 2, ...; ``time``/``energy`` so far are added unless given): the tuner records the partial
    objectives and, with a pruner, ``report`` raises :class:`~lightning_addons.tuner.pruners.TrialPruned`
    to stop the trial (do not catch it); the trial is then recorded as pruned with its last partial
    values.

    Examples:
        >>> r = FunctionTrialRunner(lambda p: {"loss": p["x"] ** 2})({"x": 3.0}, 0)
        >>> r["status"], r["metrics"]["loss"]
        ('ok', 9.0)
    """

    def __init__(
        self,
        fn: Callable[[dict[str, Any]], Mapping[str, float]],
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
    ):
        self.fn = fn
        self.watts_per_core = watts_per_core
        #: called as ``on_progress(step, {"metrics", "time", "energy"})`` by ``report``; True stops the trial
        self.on_progress: Callable[[int, dict[str, Any]], bool] | None = None

    def __call__(self, params, trial_number):
        from lightning_addons.tuner.pruners import TrialPruned

        meter = CPUTimeMeter(self.watts_per_core)
        meter.start()
        t0 = time.perf_counter()
        last: dict[str, Any] = {}
        on_progress = self.on_progress

        def report(step: int, metrics: Mapping[str, float]) -> None:
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise ValueError(f"report(step, metrics): `step` must be an integer >= 1, got {step!r}.")
            m = {k: float(v) for k, v in dict(metrics).items()}
            record = {
                "metrics": m,
                "time": m.pop("time", time.perf_counter() - t0),
                "energy": m.pop("energy", meter.read()),
            }
            last.update(record, step=step)
            if on_progress is not None and on_progress(step, record):
                raise TrialPruned(step)

        try:
            out = self.fn(dict(params), report) if _takes_report(self.fn) else self.fn(dict(params))
            metrics = {k: float(v) for k, v in dict(out).items()}
        except TrialPruned as pruned:
            return {
                "status": "pruned",
                "step": pruned.step,
                "metrics": last["metrics"],
                "time": last["time"],
                "energy": last["energy"],
                "energy_source": meter.source,
            }
        except Exception as err:  # noqa: BLE001
            return {
                "status": "fail",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=20),
            }
        return {
            "status": "ok",
            "metrics": metrics,
            "time": metrics.pop("time", time.perf_counter() - t0),
            "energy": metrics.pop("energy", meter.read()),
            "energy_source": meter.source,
        }


class LightningTrialRunner(TrialRunner):
    """Run each trial in a fresh subprocess: build model/data/Trainer from a LightningCLI-style config with
    the trial's parameters applied, fit, and read the logged metrics.

    Args:
        config: ``{"model": {class_path, init_args}, "data": {...}, "trainer": {...}, "seed_everything": int}``.
        targets: parameter name -> dotted config path (model params, batch size, precision, ...).
        system_names: parameters applied in the trial process (threads, compile, matmul precision, ...).
        timeout: seconds per trial (killed and marked failed beyond), or None.
        watts_per_core: for the CPU-time energy estimate.
        workdir: folder for the trial spec/result files.
        energy_source: the trial's :class:`~lightning_addons.callbacks.EnergyMeter` source (``"auto"``,
            ``"nvml"``, ``"rapl"``, ``"codecarbon"``, ``"cpu-time-estimate"``); recorded with each result.

    A trial process dies with the process that started it (own process group, ``PR_SET_PDEATHSIG`` and a
    watchdog thread); its process group is killed when it ends, so no straggler runs beside the next
    trial. A result file whose digest does not match is a failed trial naming the file.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        targets: Mapping[str, str],
        system_names: Sequence[str] = (),
        timeout: float | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        workdir: str | os.PathLike | None = None,
        python: str | None = None,
        energy_source: str = "auto",
    ):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"`timeout` must be > 0 seconds or None, got {timeout!r}.")
        self.config = dict(config)
        self.targets = dict(targets)
        self.system_names = list(system_names)
        self.timeout = timeout
        self.watts_per_core = watts_per_core
        self.energy_source = _check_energy_source(energy_source)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hypertuner_"))
        self.python = python or sys.executable
        #: called with ``{pid, start, result, log, token}`` as soon as a trial process started (the tuner records
        #: it in the study, so that a restart can recover or reap the trial)
        self.on_start: Callable[[dict[str, Any]], None] | None = None
        #: called as ``on_progress(step, {"metrics", "time", "energy"})`` for each validation the trial process
        #: reports; True stops (kills) the trial, which is then returned as ``status: "pruned"``
        self.on_progress: Callable[[int, dict[str, Any]], bool] | None = None
        #: seconds between two reads of the trial's progress file
        self.poll_interval = 0.2

    def __call__(self, params, trial_number):
        self.workdir.mkdir(parents=True, exist_ok=True)
        system = {k: v for k, v in params.items() if k in self.system_names}
        cfg = build_trial_config(self.config, params, self.targets)
        token = uuid.uuid4().hex
        spec = {
            "config": cfg,
            "system": system,
            "watts_per_core": self.watts_per_core,
            "energy_source": self.energy_source,
            "token": token,
        }
        spec_path = self.workdir / f"trial_{trial_number}_spec.json"
        out_path = self.workdir / f"trial_{trial_number}_result.json"
        out_path.unlink(missing_ok=True)
        progress = _ProgressReader(self.workdir / f"trial_{trial_number}_progress.jsonl")
        on_progress = self.on_progress
        if on_progress is not None:
            spec["progress"] = str(progress.path.resolve())
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ)
        if "torch_threads" in system:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(system["torch_threads"]))
        # the trial must import the same lightning_addons as this process
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [pkg_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        )
        log_path = self.workdir / f"trial_{trial_number}.log"
        env[PARENT_ENV] = str(os.getpid())
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "lightning_addons.tuner.trial", str(spec_path), str(out_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: its dataloader workers die with it
                preexec_fn=_die_with_parent(os.getpid()),
            )
            try:
                if self.on_start is not None:
                    self.on_start(
                        {
                            "pid": proc.pid,
                            "start": process_start_time(proc.pid),
                            "result": str(out_path.resolve()),
                            "log": str(log_path.resolve()),
                            "token": token,
                        }
                    )
                if on_progress is None:
                    rc = proc.wait(timeout=self.timeout)
                else:
                    while True:
                        try:
                            rc = proc.wait(timeout=self.poll_interval)
                            break
                        except subprocess.TimeoutExpired:
                            if self.timeout is not None and time.perf_counter() - t0 > self.timeout:
                                raise
                        for step, record in progress.read():
                            if on_progress(step, record):
                                kill_process_group(proc.pid)
                                proc.wait()
                                return {
                                    "status": "pruned",
                                    "step": step,
                                    "metrics": record["metrics"],
                                    "time": record["time"],
                                    "energy": record["energy"],
                                    "energy_source": record.get("energy_source"),
                                    "log": str(log_path),
                                }
                    for step, record in progress.read():  # the validations after the last read
                        on_progress(step, record)
            except subprocess.TimeoutExpired:
                kill_process_group(proc.pid)
                proc.wait()
                return {
                    "status": "fail",
                    "error": f"timeout after {self.timeout} s",
                    "log": str(log_path),
                    "wall": time.perf_counter() - t0,
                }
            except BaseException:
                kill_process_group(proc.pid)
                proc.wait()
                raise
            finally:
                # nothing of this trial (dataloader workers, grandchildren) outlives it: the next trial's
                # time and energy are measured alone
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not out_path.exists():
            tail = log_path.read_text()[-2000:] if log_path.exists() else ""
            return {
                "status": "fail",
                "error": f"trial process exited with code {rc} without a result",
                "log": tail,
            }
        try:
            result = read_result(out_path)
        except ValueError as err:
            return {"status": "fail", "error": str(err), "log": str(log_path)}
        if result.get("token") != token:
            return {
                "status": "fail",
                "error": f"trial result file {str(out_path)!r} belongs to another trial (token mismatch)",
                "log": str(log_path),
            }
        result["log"] = str(log_path)
        return result


class _ProgressReader:
    """Reads the complete new lines of a trial's progress file (see :func:`_progress_callback`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.offset = 0

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                out.append((int(rec["step"]), rec))
            except (ValueError, KeyError, TypeError):
                continue
        return out


if __name__ == "__main__":  # pragma: no cover
    _main()
