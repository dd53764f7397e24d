"""HyperTuner: cross-layer multi-objective tuning of Lightning runs on an Optuna study."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import logging
import math
import os
import re
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_addons._imports import require
from lightning_addons._progress import Progress
from lightning_addons.energy.meters import DEFAULT_WATTS_PER_CORE, ENERGY_SOURCES
from lightning_addons.tuner._pareto import log_columns, pareto_mask, to_max
from lightning_addons.tuner.actuators import Actuator
from lightning_addons.tuner.mopir import MOPIRResult
from lightning_addons.tuner.optimizers import ALGORITHMS
from lightning_addons.tuner.pruners import make_pruner, pruner_config
from lightning_addons.tuner.space import SYSTEM_PARAMETERS, SearchSpace
from lightning_addons.tuner.trial import (
    BUILTIN_OBJECTIVES,
    FunctionTrialRunner,
    LightningTrialRunner,
    Objective,
    TrialRunner,
    build_trial_config,
    class_config,
    kill_process_group,
    parse_objectives,
    process_alive,
    process_start_time,
    read_result,
    resolve_class,
)

log = logging.getLogger(__name__)

OPTUNA_ALGORITHMS = ("tpe", "nsga2", "gp", "optuna_random")
#: System knobs applied through the trial's config (the others are applied inside the trial process).
_CONFIG_TARGETS = {
    "precision": "trainer.precision",
    "batch_size": "data.init_args.batch_size",
    "num_workers": "data.init_args.num_workers",
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "devices": "trainer.devices",
    "strategy": "trainer.strategy",
}
#: Trial system attribute: the worker running the trial ``{host, pid, start}``.
WORKER_ATTR = "hypertuner_worker"
#: Trial system attribute: its trial process ``{pid, start, result, log}`` (Lightning trials).
PROCESS_ATTR = "hypertuner_process"
#: Study user attribute: the fingerprint of the configuration that determines the study's results.
CONFIG_ATTR = "hypertuner_config"
#: Trial user attribute prefix: the objective vector a trial reported at step ``n`` is ``objectives@n``.
STEP_ATTR = "objectives@"
#: Trial user attribute: per-objective standard error of the mean over repeats (None where not repeated).
SEM_ATTR = "objective_sem"
#: (storage URL, trial id) of the trials this process is running now.
_ACTIVE: set[tuple[str, int]] = set()
#: Trainer arguments with process-wide side effects, left out of the dry ``Trainer`` built by the checks.
_GLOBAL_TRAINER_ARGS = ("deterministic", "benchmark", "detect_anomaly")


@dataclass
class TuningResult:
    """What :meth:`HyperTuner.run` returns.

    Attributes:
        history: one dict per trial (number, state, params, objective values, energy source, error).
        pareto: the non-dominated complete trials (same dicts).
        mopir: the MOPIR ranking (None if disabled or too few trials).
        objectives: the objectives.
        study: the Optuna study.
    """

    history: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    mopir: MOPIRResult | None
    objectives: list[Objective]
    study: Any = field(repr=False, default=None)

    def dataframe(self):
        import pandas as pd

        rows = []
        for h in self.history:
            row = {"number": h["number"], "state": h["state"]}
            row.update({f"param_{k}": v for k, v in h["params"].items()})
            row.update({o.name: h["values"].get(o.name) for o in self.objectives})
            row.update(
                energy_source=h.get("energy_source"), pareto=h.get("pareto", False), error=h.get("error")
            )
            rows.append(row)
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- checks before work
def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."


def _resolve(path: Any, where: str) -> type:
    if not isinstance(path, str) or not path:
        raise ValueError(f"`{where}` must be a class path string, got {path!r}.")
    try:
        return resolve_class(path)
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError, ValueError of the resolver
        raise ValueError(
            f"`{where}`: cannot resolve class_path {path!r}: {type(err).__name__}: {err}"
        ) from err


def _arguments(cls: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters of ``cls(...)``, whether it takes ``**kwargs``); ``({}, True)`` when unknown."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}, True
    params = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return params, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def _check_class_configs(node: Any, where: str) -> None:
    """Every ``{class_path, init_args}`` below ``node`` resolves, and its ``init_args`` fit the signature."""
    if isinstance(node, Mapping):
        if "class_path" not in node:
            for k, v in node.items():
                _check_class_configs(v, f"{where}.{k}" if where else str(k))
            return
        extra = sorted(set(node) - {"class_path", "init_args"})
        if extra:
            raise ValueError(
                f"`{where}` has keys {extra} beside `class_path` and `init_args`; constructor arguments go "
                "under `init_args`."
            )
        cls = _resolve(node["class_path"], f"{where}.class_path")
        args = node.get("init_args") or {}
        if not isinstance(args, Mapping):
            raise ValueError(f"`{where}.init_args` must be a mapping, got {args!r}.")
        params, var_kw = _arguments(cls)
        name = getattr(cls, "__name__", str(cls))
        if not var_kw:
            for k in args:
                if k not in params:
                    raise ValueError(
                        f"`{where}.init_args.{k}`: {name} has no argument {k!r}{_did_you_mean(k, params)} "
                        f"Its arguments: {sorted(params)}."
                    )
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in args]
        if missing:
            raise ValueError(
                f"`{where}.init_args`: {name} needs the argument(s) {missing}, which are not set."
            )
        for k, v in args.items():
            _check_class_configs(v, f"{where}.init_args.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_class_configs(v, f"{where}[{i}]")


def _trainer_class() -> type:
    import lightning.pytorch as pl

    return pl.Trainer


def _check_target(config: Mapping[str, Any], path: str, pname: str) -> None:
    """The dotted ``path`` names an existing config key, or an argument the owning class accepts."""
    keys = path.split(".")
    node: Any = config
    owner: Any = None  # the class whose keyword arguments `node` holds
    for i, k in enumerate(keys):
        where = ".".join(keys[:i])
        last = i == len(keys) - 1
        if isinstance(node, Mapping) and "class_path" in node and k == "init_args":
            owner = _resolve(node["class_path"], f"{where}.class_path")
            node = node.get("init_args") or {}
            continue
        if isinstance(node, Mapping) and k in node:
            owner = _trainer_class() if (i == 0 and k == "trainer") else None
            node = node[k]
            continue
        if i == 0 and k == "trainer":  # no trainer section: Trainer's defaults
            node, owner = {}, _trainer_class()
            continue
        params: dict[str, Any] = {}
        if owner is not None:
            params, var_kw = _arguments(owner)
            if last and (k in params or var_kw):
                return
        if not isinstance(node, Mapping):
            raise ValueError(
                f"space parameter {pname!r}: `target` {path!r} does not exist in the config: "
                f"`{where}` is {node!r}, not a section with keys."
            )
        candidates = sorted({*map(str, node), *params})
        raise ValueError(
            f"space parameter {pname!r}: `target` {path!r} does not exist in the config: "
            f"`{where or '<top level>'}` has no key {k!r}{_did_you_mean(k, candidates)} Keys there: {candidates}."
        )


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _dry_trainer(tcfg: Mapping[str, Any], what: str) -> None:
    """Build (not fit) a Trainer from a trial's trainer section: Lightning checks its ranges and values."""
    Trainer = _trainer_class()
    params, _ = _arguments(Trainer)
    for k in tcfg:
        if k not in params:
            raise ValueError(
                f"`trainer.{k}`: Trainer has no argument {k!r}{_did_you_mean(k, params)} "
                f"Its arguments: {sorted(params)}."
            )
    kw = {
        k: v
        for k, v in tcfg.items()
        if k not in ("callbacks", "logger", "plugins", *_GLOBAL_TRAINER_ARGS)
        and not (isinstance(v, Mapping) and "class_path" in v)
    }
    kw.update(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with _quiet_lightning(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            Trainer(**kw)
        except Exception as err:  # noqa: BLE001 - Lightning's MisconfigurationException, ValueError, ...
            raise ValueError(f"the trainer config {what} is invalid: {type(err).__name__}: {err}") from err


def _check_writable(path: str | os.PathLike, what: str) -> None:
    """``path`` (a folder, created later if absent) can be written: a file is created and removed in it or
    in its nearest existing ancestor."""
    path = Path(path).absolute()
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} cannot be created: {str(anc)!r} is not a folder.")
    try:
        with tempfile.NamedTemporaryFile(dir=anc, prefix=".hypertuner-write-check-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"{what} {str(path)!r} is not writable ({err.strerror or err} in {str(anc)!r}); "
            "choose a writable folder."
        ) from err


def _host_id() -> str:
    """This host and PID namespace: pids are only compared between workers with the same one (two
    containers may share a hostname, not a PID namespace)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{socket.gethostname()}|{ns}" if ns else socket.gethostname()


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _storage_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import optuna

    errs: list[type[BaseException]] = [optuna.exceptions.StorageInternalError, sqlite3.Error]
    try:
        import sqlalchemy.exc

        errs.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - optuna needs sqlalchemy for RDB storages
        pass
    return tuple(errs)


def _error_key(error: str) -> str:
    """An error with its numbers masked: two trials failing alike give the same key."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?(e[-+]?\d+)?", "#", first, flags=re.I)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list) and obj and any(isinstance(v, (Mapping, list)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _config_diff(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    a, b = _flatten(stored), _flatten(now)
    missing = object()
    return [
        f"{k} (stored {a.get(k, '<absent>')!r}, now {b.get(k, '<absent>')!r})"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


class HyperTuner:
    """Tune model and system parameters of a Lightning run for several objectives at once.

    Each trial builds a fresh ``Trainer`` in a fresh subprocess, applies the trial's system knobs
    (precision, batch size, ``num_workers``, torch (interop) threads, ``accumulate_grad_batches``,
    ``devices``/``strategy``, ``torch.compile``, matmul precision) before training, fits, and records the
    objectives: any logged metric, ``time`` (fit wall seconds) and ``energy`` (joules, with its meter's
    source). Trials live in an Optuna study (SQLite file by default; PostgreSQL/MySQL URLs for many
    workers); suggestions come from :class:`~lightning_addons.tuner.sampler.HyperTunerSampler`
    (ADUMBO + MOPIR) or one of Optuna's samplers. Failed trials (exception, OOM, NaN loss, timeout) are
    recorded as ``FAIL`` and the study goes on, until ``max_consecutive_failures`` trials in a row fail
    with the same error, which then stops the study.

    Before the first trial everything checkable is checked (:meth:`validate`): class paths resolve and
    their ``init_args`` fit the constructors, every ``target`` exists in the config, the Trainer accepts
    the trainer section at the space's defaults and extremes (``max_epochs: -3`` is an error), and the
    output and SQLite folders are writable. The study stores a fingerprint of everything that determines
    its results (:meth:`fingerprint`) and refuses to resume with another one, naming the differing keys.

    A killed run resumes from the storage: a trial process dies with its worker, a trial left running by
    a dead worker is recovered from its result file (digest verified) or failed with the reason and run
    again (such *lost* trials do not count towards ``n_trials``).

    Args:
        space: a :class:`SearchSpace` or its YAML mapping.
        objectives: e.g. ``["val_acc:max", "time:min", "energy:min"]`` or dicts ``{name, direction}``.
        model: LightningModule class or ``{class_path, init_args}``; with ``model_args`` for a class.
        data: LightningDataModule class or ``{class_path, init_args}``; with ``data_args``.
        trainer: ``Trainer`` keyword arguments (YAML form; callbacks as ``{class_path, init_args}``).
        trial_fn: instead of model/data, a function ``params -> {metric: value}`` run in-process.
        algorithm: ``adumbo`` (default), ``adumbo_w1``, ``adumbo_w0``, ``random``, ``sobol``, ``qnehvi``,
            or Optuna's ``tpe``, ``nsga2``, ``gp``, ``optuna_random``.
        n_trials: total finished trials wanted in the study (shared by all workers; a resumed study counts
            the trials it already has).
        n_init: initial design size (default ``min(10, max(2, n_trials // 3))``).
        seed: random seed (also ``seed_everything`` of each trial unless the config sets one).
        storage: Optuna storage URL; default ``sqlite:///<output_dir>/study.db``.
        study_name: study name in the storage.
        output_dir: reports, trial logs and the default SQLite file.
        mopir: True (defaults), False, or a dict of options (``share``, ``k_min``, ``top_k``, ``method``,
            ``weights``, ``freeze``).
        timeout: seconds per trial (Lightning trials), None for no limit.
        watts_per_core: power of one busy core for the CPU-time energy estimate.
        energy_source: meter of the ``energy`` objective in Lightning trials: ``"auto"`` (NVML, RAPL, else
            the CPU-time estimate), or force ``"nvml"``, ``"rapl"``, ``"codecarbon"`` (``tune`` extra),
            ``"cpu-time-estimate"``. Each trial records the source it used.
        actuators: root-only :class:`Actuator` objects for knobs outside the process (off by default).
        progress: show finished trials and the best value per objective: a tqdm bar on a terminal, one
            plain line per trial otherwise (``LIGHTNING_ADDONS_PROGRESS=bar|plain|off`` overrides).
        heartbeat_interval: seconds between heartbeats of a running trial; a trial silent for twice this is
            failed by the next worker (a killed run's last trial).
        optimizer_kwargs: extra options of the ask/tell optimiser (``tau``, ``w0``, ``beta``, ...).
        seed_everything: ``seed_everything`` of each Lightning trial (default ``seed``).
        max_consecutive_failures: stop the study when this many trials in a row failed with the same
            error (numbers in the message aside); None never stops.
        logger: a Lightning logger (``CSVLogger``, ``TensorBoardLogger``, W&B, MLflow, ...) or its
            ``{class_path, init_args}`` config: each finished trial logs its objective values, its numeric
            metrics and ``trial_failed`` at step = trial number, as the trial finishes.
        pruner: early stopping of trials (``docs/hypertuner.md``, "Early stopping"): None (off), a mapping
            ``{name: pareto_halving, min_resource: 1, reduction_factor: 3, min_peers: 4, tie_break:
            hypervolume}``, ``{name: learning_curve, min_complete: 5, quantile: 0.9, max_resource: <epochs>}``
            (:class:`~lightning_addons.tuner.pruners.LearningCurvePruner`) or a pruner object
            (:class:`~lightning_addons.tuner.pruners.ParetoHalvingPruner`).
            Trials report their objectives after each validation (Lightning trials) or through
            ``report(step, metrics)`` (a ``trial_fn(params, report)``); a pruned trial is stored as Optuna
            ``PRUNED`` with its partial values (user attributes ``partial_values``, ``pruned_at``) and
            counts towards ``n_trials``; the ADUMBO sampler learns from ``COMPLETE`` trials only.
        repeats: ``{objective_name: k}``: run a finished trial ``k`` times in all and record the mean of the
            named objectives (meant for ``time``/``energy``), with the standard error of the mean in the
            trial user attribute ``objective_sem`` (None for objectives not repeated). The report shows it.

    Raises:
        ValueError: bad space/objectives/algorithm/n_trials, an unknown system parameter, ``devices``
            tuned on a machine with one device, neither ``model`` nor ``trial_fn`` given; a class path
            that does not resolve, an ``init_args`` key the class does not take, a ``target`` missing
            from the config, a trainer section the Trainer rejects (with "did you mean").
        ModuleNotFoundError: Optuna/BoTorch missing (names the extra ``tune``), at :meth:`run`.

    Examples:
        >>> tuner = HyperTuner(
        ...     space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
        ...     objectives=["f1:min", "f2:min"],
        ...     trial_fn=lambda p: {"f1": p["x"], "f2": (1 - p["x"]) ** 2},
        ...     algorithm="sobol", n_trials=4, storage="sqlite:///:memory:", progress=False, mopir=False)
        >>> len(tuner.run().history)
        4
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Mapping[str, Any]],
        objectives: Sequence[Any],
        model: Any = None,
        data: Any = None,
        trainer: Mapping[str, Any] | None = None,
        model_args: Mapping[str, Any] | None = None,
        data_args: Mapping[str, Any] | None = None,
        trial_fn: Callable[[dict[str, Any]], Mapping[str, float]] | None = None,
        algorithm: str = "adumbo",
        n_trials: int = 20,
        n_init: int | None = None,
        seed: int = 0,
        storage: str | None = None,
        study_name: str = "hypertuner",
        output_dir: str | os.PathLike = "runs/hypertuner",
        mopir: bool | Mapping[str, Any] = True,
        timeout: float | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        energy_source: str = "auto",
        actuators: Sequence[Actuator] | None = None,
        progress: bool = True,
        heartbeat_interval: int = 10,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        seed_everything: int | None = None,
        max_consecutive_failures: int | None = 3,
        logger: Any = None,
        pruner: Any = None,
        repeats: Mapping[str, int] | None = None,
    ) -> None:
        self.actuators = list(actuators or [])
        extra = [n for a in self.actuators for n in a.parameters]
        if isinstance(space, SearchSpace):
            space = SearchSpace(space.params, extra_system=extra)  # re-validate with the actuators' names
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space, extra_system=extra)
        self.objectives = parse_objectives(objectives)
        algos = (*ALGORITHMS, "adumbo_w1", "adumbo_w0", *OPTUNA_ALGORITHMS)
        if algorithm not in algos:
            raise ValueError(f"`algorithm` must be one of {list(algos)}, got {algorithm!r}.")
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"`n_trials` must be an integer >= 1, got {n_trials!r}.")
        if n_init is not None and (not isinstance(n_init, int) or n_init < 1):
            raise ValueError(f"`n_init` must be an integer >= 1 or None, got {n_init!r}.")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"`timeout` must be > 0 seconds or None, got {timeout!r}.")
        if max_consecutive_failures is not None and (
            not isinstance(max_consecutive_failures, int) or max_consecutive_failures < 1
        ):
            raise ValueError(
                f"`max_consecutive_failures` must be an integer >= 1 or None, got {max_consecutive_failures!r}."
            )
        if (model is None) == (trial_fn is None):
            raise ValueError(
                "give exactly one of `model` (a LightningModule class or {class_path, init_args}) "
                f"or `trial_fn` (a function); got model={model!r}, trial_fn={trial_fn!r}."
            )
        self.pruner = make_pruner(pruner)
        self.repeats = self._check_repeats(repeats)
        self.algorithm = algorithm
        self.n_trials = n_trials
        self.n_init = n_init if n_init is not None else min(10, max(2, n_trials // 3))
        self._n_init_given = n_init is not None
        self.max_consecutive_failures = max_consecutive_failures
        self.seed = int(seed)
        self.output_dir = Path(output_dir)
        self.storage = storage or f"sqlite:///{(self.output_dir / 'study.db').as_posix()}"
        self.study_name = study_name
        if mopir is True:
            mopir = {}
        self.mopir_options = None if mopir is False or mopir is None else dict(mopir)
        self.timeout = timeout
        self.watts_per_core = watts_per_core
        if energy_source not in ENERGY_SOURCES:
            raise ValueError(f"`energy_source` must be one of {list(ENERGY_SOURCES)}, got {energy_source!r}.")
        if trial_fn is not None and energy_source not in ("auto", "cpu-time-estimate"):
            raise ValueError(
                "`energy_source` chooses the meter of Lightning trials; a `trial_fn` is metered by the "
                "CPU-time estimate, so energy_source must be 'auto' or 'cpu-time-estimate', "
                f"got {energy_source!r}."
            )
        self.energy_source = energy_source
        self.progress = progress
        if (
            logger is not None
            and not (isinstance(logger, Mapping) and "class_path" in logger)
            and not all(hasattr(logger, m) for m in ("log_metrics", "log_hyperparams"))
        ):
            raise ValueError(
                "`logger` must be a Lightning logger (e.g. CSVLogger(save_dir=...)) or its "
                f"{{class_path, init_args}} config, got {logger!r}."
            )
        self.logger = logger
        self.heartbeat_interval = int(heartbeat_interval)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self._check_devices()
        if trial_fn is not None:
            self.runner: TrialRunner = FunctionTrialRunner(trial_fn, watts_per_core)
        else:
            config = {
                "seed_everything": self.seed if seed_everything is None else seed_everything,
                "model": class_config(model, model_args),
                "data": class_config(data, data_args),
                "trainer": dict(trainer or {}),
            }
            targets = {}
            for p in self.space.params:
                if p.target:
                    targets[p.name] = p.target
                elif p.layer == "system" and p.name in _CONFIG_TARGETS:
                    targets[p.name] = _CONFIG_TARGETS[p.name]
                elif p.layer == "model":
                    targets[p.name] = f"model.init_args.{p.name}"
            sysnames = [
                p.name for p in self.space.params if p.layer == "system" and p.name in SYSTEM_PARAMETERS
            ]
            self.runner = LightningTrialRunner(
                config,
                targets,
                sysnames,
                timeout=timeout,
                watts_per_core=watts_per_core,
                workdir=self.output_dir / "trials",
                energy_source=energy_source,
            )
            self._check_config()
        self._checked_names = False

    # ----------------------------------------------------------------------------- checks
    def _check_repeats(self, repeats: Mapping[str, int] | None) -> dict[str, int]:
        if repeats is None:
            return {}
        if not isinstance(repeats, Mapping):
            raise ValueError(f"`repeats` must be a mapping {{objective_name: k}} or None, got {repeats!r}.")
        names = [o.name for o in self.objectives]
        out = {}
        for name, k in repeats.items():
            if name not in names:
                raise ValueError(f"`repeats`: {name!r} is not an objective; objectives: {names}.")
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"`repeats.{name}` must be an integer >= 1, got {k!r}.")
            if k > 1:
                out[name] = k
        return out

    def _check_devices(self) -> None:
        for name in ("devices", "strategy"):
            if name in self.space.names:
                import torch

                n = torch.cuda.device_count()
                if n < 2:
                    raise ValueError(
                        f"system parameter {name!r} is tuned only where more than one device exists; this machine "
                        f"has {n} CUDA device(s). Remove {name!r} from the space."
                    )

    def _check_config(self) -> None:
        """Class paths, ``init_args``, targets and the trainer section, at the space's defaults and at the
        extremes of every parameter written to the trainer section (no model is built, nothing is fit)."""
        runner = self.runner
        assert isinstance(runner, LightningTrialRunner)
        base = runner.config
        for section in ("model", "data"):
            cfg = base.get(section)
            if cfg is None:
                continue
            if not isinstance(cfg, Mapping) or "class_path" not in cfg:
                raise ValueError(f"`{section}` must be a {{class_path, init_args}} mapping, got {cfg!r}.")
        for name, target in runner.targets.items():
            _check_target(base, target, name)
        defaults = self.space.defaults()
        cfg = build_trial_config(base, defaults, runner.targets)
        for section in ("model", "data", "trainer"):
            _check_class_configs(cfg.get(section), section)
        _dry_trainer(cfg.get("trainer") or {}, "(at the space's defaults)")
        for p in self.space.params:
            target = runner.targets.get(p.name, "")
            if not target.startswith("trainer."):
                continue
            for value in p.choices if p.type == "categorical" else (p.low, p.high):
                cfg = build_trial_config(base, {**defaults, p.name: value}, runner.targets)
                _dry_trainer(cfg.get("trainer") or {}, f"with {p.name}={value!r}")

    def _sqlite_path(self) -> Path | None:
        if self.storage.startswith("sqlite:///") and ":memory:" not in self.storage:
            return Path(self.storage[len("sqlite:///") :])
        return None

    def validate(self) -> None:
        """Check everything checkable before the first trial (:meth:`run` calls it first).

        The config checks of the constructor (class paths, ``init_args``, targets, trainer ranges) plus:
        ``output_dir`` and the SQLite storage's folder (and file) are writable. Nothing is created.

        Raises:
            ValueError: see the class; PermissionError / NotADirectoryError: a path that cannot be
                written, named.
        """
        if isinstance(self.runner, LightningTrialRunner):
            self._check_config()
        _check_writable(self.output_dir, "`output_dir`")
        db = self._sqlite_path()
        if db is not None:
            _check_writable(db.parent, f"the folder of the SQLite `storage` {self.storage!r}:")
            if db.exists():
                try:
                    open(db, "r+b").close()
                except OSError as err:
                    raise PermissionError(
                        f"the SQLite `storage` file {str(db)!r} is not writable ({err.strerror or err})."
                    ) from err

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the study's results (objectives, space, sampler settings, model,
        data and trainer config or the trial function's name, energy model, library version). Stored in
        the study; a resumed study must have the same one. ``n_trials``, ``timeout``, storage and output
        folder are not part of it."""
        from lightning_addons import __version__

        fp: dict[str, Any] = {
            "objectives": [
                {"name": o.name, "direction": o.direction, "log_scale": o.log_scale} for o in self.objectives
            ],
            "space": self.space.to_dict(),
            "algorithm": self.algorithm,
            "seed": self.seed,
            "n_init": self.n_init,
            "mopir": self.mopir_options,
            "optimizer_kwargs": self.optimizer_kwargs,
            "watts_per_core": self.watts_per_core,
            "lightning_addons": __version__,
        }
        if self.energy_source != "auto":  # absent for "auto": studies made before the option still resume
            fp["energy_source"] = self.energy_source
        if self.pruner is not None:  # absent when off: studies made before pruners existed still resume
            fp["pruner"] = pruner_config(self.pruner)
        if self.repeats:
            fp["repeats"] = dict(self.repeats)
        if isinstance(self.runner, LightningTrialRunner):
            fp.update(
                config=self.runner.config,
                targets=self.runner.targets,
                process_knobs=self.runner.system_names,
            )
        elif isinstance(self.runner, FunctionTrialRunner):
            fn = self.runner.fn
            fp["trial_fn"] = getattr(fn, "__name__", type(fn).__name__)
        return json.loads(json.dumps(fp, default=repr))

    def _check_fingerprint(self, study) -> None:
        fp = self.fingerprint()
        stored = study.user_attrs.get(CONFIG_ATTR)
        if stored is None:
            legacy = study.user_attrs.get("hypertuner_space")
            if legacy is not None and legacy != self.space.to_dict():
                raise ValueError(
                    f"study {self.study_name!r} was created with another search space: {legacy}; "
                    f"use a new `study_name` or the same space."
                )
            study.set_user_attr(CONFIG_ATTR, fp)
            study.set_user_attr("hypertuner_space", self.space.to_dict())
            return
        if not self._n_init_given and stored.get("n_init") != fp["n_init"]:
            # n_init derived from n_trials: a study extended with more trials keeps its initial design
            self.n_init = int(stored["n_init"])
            fp["n_init"] = self.n_init
            study.sampler = self._make_sampler()
        diff = _config_diff(stored, fp)
        if diff:
            shown = "; ".join(diff[:12]) + (f"; and {len(diff) - 12} more" if len(diff) > 12 else "")
            raise ValueError(
                f"study {self.study_name!r} in {_redact(self.storage)} was created with a different "
                f"configuration; differing keys: {shown}. To resume it, restore those values; to start "
                "fresh, use another `study_name` or `output_dir` (or delete the study: optuna delete-study "
                f"--storage URL --study-name {self.study_name})."
            )

    def _check_logged(self, result: Mapping[str, Any]) -> None:
        logged = sorted(result.get("metrics", {}))
        missing = [
            o.name for o in self.objectives if o.name not in BUILTIN_OBJECTIVES and o.name not in logged
        ]
        if missing:
            raise ValueError(
                f"objective(s) {missing} were never logged by the first finished trial; logged names: {logged} "
                f"(built-in: {sorted(BUILTIN_OBJECTIVES)}). Fix `objectives` or log the metric with self.log()."
            )

    # ----------------------------------------------------------------------------- study
    def create_study(self):
        """Create or load the Optuna study (``load_if_exists``), checking its stored fingerprint.

        Workers starting at the same instant on an empty database are safe: on PostgreSQL the creation
        of the tables and of the study runs under an advisory lock, elsewhere it is retried.

        Raises:
            ValueError: the stored study has other directions or another configuration (differing keys
                named).
            RuntimeError: the storage fails (named, password hidden).
        """
        optuna = require("optuna", feature="HyperTuner")
        if self.algorithm.startswith("adumbo") or self.algorithm == "qnehvi":
            require("botorch", feature="HyperTuner")
        db = self._sqlite_path()
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        errors = _storage_errors()
        for attempt in range(6):
            try:
                with self._creation_lock():
                    study = self._open_study(optuna)
                break
            except errors as err:
                if attempt == 5 or not self._is_creation_race(err):
                    raise self._storage_failure(err, "opening the study") from err
                time.sleep(0.2 * (attempt + 1))
        return study

    @staticmethod
    def _is_creation_race(err: BaseException) -> bool:
        text = f"{type(err).__name__} {err}".lower()
        return any(
            s in text
            for s in (
                "uniqueviolation",
                "integrityerror",
                "already exists",
                "duplicate",
                "database is locked",
            )
        )

    @contextlib.contextmanager
    def _creation_lock(self) -> Iterator[None]:
        """A PostgreSQL advisory lock around table and study creation (a no-op for other storages)."""
        if not self.storage.startswith(("postgresql", "postgres")):
            yield
            return
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(self.storage, poolclass=NullPool)
        key = 0x48797065  # "Hype"
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()

    def _open_study(self, optuna):
        if "://" in self.storage:
            storage = optuna.storages.RDBStorage(
                self.storage,
                heartbeat_interval=self.heartbeat_interval,
                grace_period=2 * self.heartbeat_interval,
            )
        else:
            storage = self.storage
        directions = [o.direction for o in self.objectives]
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            directions=directions,
            sampler=self._make_sampler(),
            load_if_exists=True,
        )
        self._check_fingerprint(study)  # names every differing key, directions included
        if [d.name.lower() for d in study.directions] != directions:
            raise ValueError(
                f"study {self.study_name!r} in the storage has directions "
                f"{[d.name.lower() for d in study.directions]}, the objectives need {directions}."
            )
        if study.metric_names != [o.name for o in self.objectives]:
            study.set_metric_names([o.name for o in self.objectives])
        return study

    def _storage_failure(self, err: BaseException, doing: str, note: str = "") -> RuntimeError:
        return RuntimeError(
            f"the study storage {_redact(self.storage)} failed while {doing}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Check that its disk is not full, that it is "
            f"writable and reachable.{note}"
        )

    def _make_sampler(self):
        from lightning_addons.tuner.sampler import HyperTunerSampler, optuna_sampler

        if self.algorithm in OPTUNA_ALGORITHMS:
            return optuna_sampler(self.algorithm, seed=self.seed, n_init=self.n_init)
        return HyperTunerSampler(
            self.space,
            [o.direction for o in self.objectives],
            algorithm=self.algorithm,
            seed=self.seed,
            n_init=self.n_init,
            log_objectives=[i for i, o in enumerate(self.objectives) if o.log_scale],
            mopir=self.mopir_options,
            optimizer_kwargs=self.optimizer_kwargs,
            objective_names=[o.name for o in self.objectives],
        )

    # ----------------------------------------------------------------------------- run
    def run(self) -> TuningResult:
        """Run trials until the study holds ``n_trials`` finished ones; returns the :class:`TuningResult`.

        Raises:
            ValueError / PermissionError: a check of :meth:`validate` or of the stored fingerprint fails.
            RuntimeError: ``max_consecutive_failures`` trials in a row failed with the same error (named),
                or the storage failed (named; the running trial is marked failed when the storage allows).
        """
        optuna = require("optuna", feature="HyperTuner")
        verbosity = optuna.logging.get_verbosity()
        # scoped to this run: the caller's warning filters and Optuna's verbosity are restored afterwards
        with warnings.catch_warnings():
            # we record heartbeats ourselves (ask/tell); Optuna warns that heartbeats are meant for optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                return self._run()
            finally:
                optuna.logging.set_verbosity(verbosity)

    def _run(self) -> TuningResult:
        from optuna.trial import TrialState

        self.validate()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        study = self.create_study()
        errors = _storage_errors()
        bar = None
        trial = None
        streak: tuple[str | None, int] = (None, 0)
        try:
            resumed = bool(study.get_trials(deepcopy=False))
            self._reap(study)
            n_done = self._n_counted(study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
            if resumed:
                log.warning(
                    "HyperTuner: resuming study %r in %s with %d finished trial(s); it runs until %d are "
                    "finished. Use another `study_name` or `output_dir` to start fresh.",
                    self.study_name,
                    _redact(self.storage),
                    n_done,
                    self.n_trials,
                )
            bar = Progress(
                self.n_trials, "HyperTuner", "trial", min(n_done, self.n_trials), mode=self.progress
            )
            while True:
                self._reap(study)
                if self._n_counted(
                    study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
                ) >= (self.n_trials):
                    break
                trial = study.ask()
                _ACTIVE.add((self.storage, trial._trial_id))
                record = self._run_trial(study, trial)
                _ACTIVE.discard((self.storage, trial._trial_id))
                self._log_trial(study, trial)
                number, trial = trial.number, None
                bar.update(1, postfix=f"trial {number} {record['state']}; {self._best_str(study)}")
                if record.get("fatal"):
                    raise record["fatal"]
                if record["state"] == "FAIL":
                    key = _error_key(record["error"])
                    streak = (key, streak[1] + 1 if key == streak[0] else 1)
                    if self.max_consecutive_failures and streak[1] >= self.max_consecutive_failures:
                        raise RuntimeError(
                            f"HyperTuner stopped study {self.study_name!r}: the last {streak[1]} trials failed "
                            f"with the same error: {record['error'][:1500]} (set `max_consecutive_failures` to "
                            "change this limit; the trials' logs are in "
                            f"{str(self.output_dir / 'trials')!r})."
                        )
                else:
                    streak = (None, 0)
        except errors as err:
            note = ""
            if trial is not None:
                ok = self._fail_quietly(
                    study, trial, f"the study storage failed: {type(err).__name__}: {err}"
                )
                note = (
                    f" Trial {trial.number} was marked failed."
                    if ok
                    else f" Trial {trial.number} could not be marked failed; the next start reaps it."
                )
            raise self._storage_failure(err, "recording trials", note) from err
        except BaseException as err:
            if trial is not None:
                # the worker stopped (interrupt, sampler or runner error): says nothing about the config
                self._fail_quietly(
                    study, trial, f"the worker stopped: {type(err).__name__}: {str(err)[:1500]}", lost=True
                )
            raise
        finally:
            if trial is not None:
                _ACTIVE.discard((self.storage, trial._trial_id))
            if bar is not None:
                bar.close()
        return self.result(study)

    def _log_trial(self, study, trial) -> None:
        """Send a finished trial's objective values and metrics to ``logger`` (step = trial number)."""
        if self.logger is None:
            return
        if isinstance(self.logger, Mapping):  # a {class_path, init_args} config: built once, on first use
            from lightning_addons.resolve import instantiate

            self.logger = instantiate(self.logger)
            self.logger.log_hyperparams(
                {
                    "algorithm": self.algorithm,
                    "n_trials": self.n_trials,
                    "seed": self.seed,
                    "objectives": [f"{o.name}:{o.direction}" for o in self.objectives],
                }  # fmt: skip
            )
        frozen = study._storage.get_trial(trial._trial_id)
        metrics: dict[str, float] = {"trial_failed": float(frozen.state.name == "FAIL")}
        if frozen.values is not None:
            metrics.update({o.name: float(v) for o, v in zip(self.objectives, frozen.values)})
        for name, value in (frozen.user_attrs.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and name not in metrics:
                metrics[name] = float(value)
        self.logger.log_metrics(metrics, step=frozen.number)
        self.logger.save()

    @staticmethod
    def _n_counted(study, states) -> int:
        """Trials that count towards ``n_trials``: lost trials (their worker died) do not."""
        return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("lost"))

    def _fail_quietly(self, study, trial, error: str, lost: bool = False) -> bool:
        """Mark a running trial failed if the storage lets us; True on success."""
        from optuna.trial import TrialState

        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", error[:2000])
            if lost:
                study._storage.set_trial_user_attr(trial._trial_id, "lost", True)
            return bool(study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
        except Exception:  # noqa: BLE001 - the storage itself is what failed
            return False

    @staticmethod
    def _suggest(trial, p):
        if p.type == "categorical":
            return trial.suggest_categorical(p.name, p.choices)
        if p.type == "int":
            return trial.suggest_int(p.name, p.low, p.high, log=p.log)
        return trial.suggest_float(p.name, p.low, p.high, log=p.log)

    def _values(self, result: Mapping[str, Any]) -> list[float]:
        """The objective vector of a result or progress record (NaN where missing)."""
        values = []
        for o in self.objectives:
            v = (
                {"time": result.get("time"), "energy": result.get("energy")}.get(o.name)
                if o.name in BUILTIN_OBJECTIVES
                else (result.get("metrics") or {}).get(o.name)
            )
            try:
                values.append(float("nan") if v is None else float(v))
            except (TypeError, ValueError):
                values.append(float("nan"))
        return values

    def _outcome(self, result: Mapping[str, Any]) -> tuple[list[float] | None, str | None]:
        """(objective values, None) for a good result, (None, error) for a failed one. With ``repeats``,
        the repeated objectives are the mean over ``result["runs"]``."""
        if result.get("status") != "ok":
            return None, str(result.get("error", "unknown failure"))
        values = self._values(result)
        runs = result.get("runs")
        if runs:
            for i, o in enumerate(self.objectives):
                if o.name in self.repeats:
                    values[i] = float(np.mean([self._values(r)[i] for r in runs[: self.repeats[o.name]]]))
        if all(math.isfinite(v) for v in values):
            return values, None
        return None, f"non-finite objective values {dict(zip([o.name for o in self.objectives], values))}"

    def _run_trial(self, study, trial) -> dict[str, Any]:
        from optuna.exceptions import UpdateFinishedTrialError

        storage = study._storage
        storage.set_trial_system_attr(
            trial._trial_id,
            WORKER_ATTR,
            {"host": _host_id(), "pid": os.getpid(), "start": process_start_time(os.getpid())},
        )
        params = {p.name: self._suggest(trial, p) for p in self.space.params}
        stop = threading.Event()
        hb = None
        if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():

            def beat():
                while not stop.wait(self.heartbeat_interval):
                    try:
                        storage.record_heartbeat(trial._trial_id)
                    except Exception:  # noqa: BLE001 - a missed beat is not fatal
                        pass

            storage.record_heartbeat(trial._trial_id)
            hb = threading.Thread(target=beat, daemon=True)
            hb.start()
        if isinstance(self.runner, LightningTrialRunner):
            self.runner.on_start = lambda info: storage.set_trial_system_attr(
                trial._trial_id, PROCESS_ATTR, info
            )
        if hasattr(self.runner, "on_progress"):
            self.runner.on_progress = self._reporter(study, trial) if self.pruner is not None else None
        applied = []
        try:
            for act in self.actuators:
                vals = {k: v for k, v in params.items() if k in act.parameters}
                if vals:
                    act.apply(vals)
                    applied.append(act)
            result = self.runner(params, trial.number)
            if result.get("status") == "ok" and self.repeats:
                result = self._repeat(result, params, trial.number)
        finally:
            for act in applied:
                act.restore()
            stop.set()
            if hb is not None:
                hb.join(timeout=1)
        try:
            return self._record(study, trial, result)
        except UpdateFinishedTrialError:
            # another worker judged this one dead (a heartbeat gap) and settled the trial meanwhile
            log.warning(
                "HyperTuner: trial %d was settled by another worker while it ran here; its result here is "
                "not recorded (it runs again elsewhere).",
                trial.number,
            )
            return {"state": "SETTLED"}

    def _reporter(self, study, trial) -> Callable[[int, Mapping[str, Any]], bool]:
        """``report(step, record)`` of a running trial: stores its objective vector at ``step`` in the study
        (``objectives@<step>``) and, at a rung, asks the pruner with the vectors every other trial of the
        study (any worker, running, finished or pruned) stored for the same step."""
        from optuna.trial import TrialState

        storage = study._storage
        directions = [o.direction for o in self.objectives]
        log_scale = [bool(o.log_scale) for o in self.objectives]
        pruner = self.pruner
        uses_complete = bool(getattr(pruner, "uses_complete", False))
        uses_params = uses_complete and bool(getattr(pruner, "uses_params", False))
        defaults = self.space.defaults()

        def unit(params: Mapping[str, Any]) -> list[float]:  # a trial's configuration in the unit cube
            return self.space.to_unit({**defaults, **params}).tolist()

        def report(step: int, record: Mapping[str, Any]) -> bool:
            values = self._values(record)
            if not all(math.isfinite(v) for v in values):
                return False  # an objective not logged yet at this step: nothing to compare
            key = f"{STEP_ATTR}{int(step)}"
            storage.set_trial_user_attr(trial._trial_id, key, values)
            if pruner is None or not pruner.is_rung(int(step)):
                return False
            states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
            others = [
                t
                for t in study.get_trials(deepcopy=False, states=states)
                if t._trial_id != trial._trial_id and key in t.user_attrs
            ]
            peers = [t.user_attrs[key] for t in others]
            if not uses_complete:
                return bool(pruner.should_prune(int(step), values, peers, directions))
            # learning-curve rules: (vector at this step, final vector) of every complete trial
            done = [t for t in others if t.state == TrialState.COMPLETE and t.values is not None]
            complete = [(t.user_attrs[key], list(t.values)) for t in done]
            kw = (
                {"params": unit(trial.params), "complete_params": [unit(t.params) for t in done]}
                if uses_params
                else {}
            )
            return bool(
                pruner.should_prune(
                    int(step), values, peers, directions, complete=complete, log_scale=log_scale, **kw
                )
            )

        return report

    def _repeat(self, first: dict[str, Any], params: Mapping[str, Any], number: int) -> dict[str, Any]:
        """Run a finished trial again until every repeated objective has its ``k`` runs (no pruning in
        the repeats); a failed repeat fails the trial."""
        k = max(self.repeats.values())
        runs = [first]
        if hasattr(self.runner, "on_progress"):
            self.runner.on_progress = None
        for i in range(1, k):
            r = self.runner(params, number)
            if r.get("status") != "ok":
                return {
                    "status": "fail",
                    "error": f"repeat {i + 1} of {k} failed: {r.get('error', 'unknown failure')}",
                }
            runs.append(r)
        return {**first, "runs": runs}

    def _record(self, study, trial, result: Mapping[str, Any]) -> dict[str, Any]:
        from optuna.trial import TrialState

        trial.set_user_attr("energy_source", result.get("energy_source"))
        trial.set_user_attr("metrics", result.get("metrics", {}))
        if "applied" in result:
            trial.set_user_attr("applied", result["applied"])
        if result.get("status") == "ok" and not self._checked_names:
            try:
                self._check_logged(result)
            except ValueError as err:
                trial.set_user_attr("error", str(err))
                study.tell(trial, state=TrialState.FAIL)
                return {"state": "FAIL", "error": str(err), "fatal": err}
            self._checked_names = True
        if result.get("status") == "pruned":
            partial = self._values(result)
            trial.set_user_attr("partial_values", partial)
            trial.set_user_attr("pruned_at", int(result["step"]))
            study.tell(trial, state=TrialState.PRUNED)
            return {"state": "PRUNED"}
        values, error = self._outcome(result)
        if values is not None:
            if result.get("runs"):
                sems, reps = [], {}
                for i, o in enumerate(self.objectives):
                    k = self.repeats.get(o.name)
                    if k is None:
                        sems.append(None)
                        continue
                    vals = [self._values(r)[i] for r in result["runs"][:k]]
                    sems.append(float(np.std(vals, ddof=1) / math.sqrt(k)))
                    reps[o.name] = vals
                trial.set_user_attr(SEM_ATTR, sems)
                trial.set_user_attr("objective_repeats", reps)
            study.tell(trial, values)
            return {"state": "COMPLETE"}
        trial.set_user_attr("error", str(error)[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return {"state": "FAIL", "error": str(error)}

    # ----------------------------------------------------------------------------- dead workers
    def _reap(self, study) -> None:
        """Settle the running trials of dead workers: a worker on this host whose process is gone (or an
        earlier run in this process), or any worker whose heartbeat is older than the grace period."""
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        storage = study._storage
        stale: set[int] = set()
        if hasattr(storage, "_get_stale_trial_ids") and storage.get_heartbeat_interval():
            stale = set(storage._get_stale_trial_ids(study._study_id))
        host, pid, start = _host_id(), os.getpid(), process_start_time(os.getpid())
        now = time.time()
        unclaimed_after = max(600.0, 10.0 * self.heartbeat_interval)
        for t in running:
            w = t.system_attrs.get(WORKER_ATTR) or {}
            reason = None
            if w.get("host") == host and w.get("pid") is not None:
                if w["pid"] == pid and w.get("start") == start:
                    if (self.storage, t._trial_id) not in _ACTIVE:
                        reason = (
                            f"an earlier run in this process (pid {pid}) left it running (interrupted, or "
                            "its storage failed)"
                        )
                elif not process_alive(w["pid"], w.get("start")):
                    reason = (
                        f"its worker process {w['pid']} on {socket.gethostname()} died (killed, crashed or "
                        "out of memory) while the trial ran"
                    )
            elif t._trial_id in stale:
                reason = (
                    f"its worker {str(w.get('host', '?')).split('|')[0]}:{w.get('pid', '?')} sent no "
                    f"heartbeat for more than {2 * self.heartbeat_interval} s (it died or lost the storage)"
                )
            elif not w and t.datetime_start and now - t.datetime_start.timestamp() > unclaimed_after:
                reason = (
                    f"no worker claimed it within {unclaimed_after:.0f} s of its creation (its worker died "
                    "while sampling it)"
                )
            if reason is not None:
                self._settle(study, t, reason, same_host=w.get("host") == host)

    def _settle(self, study, t, reason: str, same_host: bool) -> None:
        """Recover a dead worker's trial from its result file, or fail it with ``reason`` and queue its
        parameters again (a lost trial does not count towards ``n_trials``)."""
        import optuna
        from optuna.trial import TrialState

        storage = study._storage
        proc = t.system_attrs.get(PROCESS_ATTR) or {}
        if same_host and proc.get("pid") and process_alive(proc["pid"], proc.get("start")):
            # an orphaned trial process would run beside the next trial and skew its time and energy
            kill_process_group(proc["pid"], proc.get("start"))
            reason += f"; its trial process {proc['pid']} was still running and was killed"
        values, error = None, None
        result_path = proc.get("result")
        if result_path and Path(result_path).is_file():
            try:
                result = read_result(result_path)
                if proc.get("token") and result.get("token") != proc["token"]:
                    raise ValueError(
                        f"trial result file {result_path!r} belongs to another trial (token mismatch: another "
                        "study in the same output folder wrote it)"
                    )
            except (OSError, ValueError) as err:
                reason += f"; {err}"
            else:
                values, error = self._outcome(result)
                attrs = {"energy_source": result.get("energy_source"), "metrics": result.get("metrics", {})}
                if "applied" in result:
                    attrs["applied"] = result["applied"]
        tail = ""
        if values is None and error is None and proc.get("log") and Path(proc["log"]).is_file():
            tail = Path(proc["log"]).read_text(errors="replace")[-600:].strip()
            tail = f"\nlast lines of its log {proc['log']}:\n{tail}" if tail else ""
        tid = t._trial_id
        try:
            if values is not None or error is not None:  # the trial had finished: its own outcome
                for k, v in attrs.items():
                    storage.set_trial_user_attr(tid, k, v)
                storage.set_trial_user_attr(tid, "recovered", f"recorded after its worker died: {reason}")
                if values is not None:
                    done = storage.set_trial_state_values(tid, TrialState.COMPLETE, values)
                else:
                    storage.set_trial_user_attr(tid, "error", str(error)[:2000])
                    done = storage.set_trial_state_values(tid, TrialState.FAIL)
                if done:
                    log.warning(
                        "HyperTuner: trial %d recovered from its result file %s (%s)",
                        t.number,
                        result_path,
                        "COMPLETE" if values is not None else "FAIL",
                    )
                return
            storage.set_trial_user_attr(tid, "error", f"lost: {reason}{tail}"[:2000])
            storage.set_trial_user_attr(tid, "lost", True)
            done = storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another worker settled it first
        if done:
            log.warning("HyperTuner: trial %d is lost and runs again: %s", t.number, reason)
            if t.params and all(n in t.params for n in self.space.names):
                study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})

    def _best_str(self, study) -> str:
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return "no finished trial yet"
        parts = []
        for i, o in enumerate(self.objectives):
            vals = [t.values[i] for t in done]
            best = max(vals) if o.direction == "maximize" else min(vals)
            parts.append(f"{o.name}={best:.4g}")
        return "best " + " ".join(parts)

    # ----------------------------------------------------------------------------- results
    def result(self, study=None) -> TuningResult:
        """Collect history, Pareto set and MOPIR ranking from the study."""
        from optuna.trial import TrialState

        from lightning_addons.tuner.mopir import mopir as run_mopir
        from lightning_addons.tuner.sampler import MOPIR_ATTR

        study = study or self.create_study()
        history = []
        for t in study.get_trials(deepcopy=False):
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                continue
            vals = t.values if t.values else t.user_attrs.get("partial_values")
            values = {o.name: (vals[i] if vals else None) for i, o in enumerate(self.objectives)}
            sems = t.user_attrs.get(SEM_ATTR) or []
            reps = t.user_attrs.get("objective_repeats") or {}
            history.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "values": values,
                    "energy_source": t.user_attrs.get("energy_source"),
                    "error": t.user_attrs.get("error"),
                    "metrics": t.user_attrs.get("metrics", {}),
                    "applied": t.user_attrs.get("applied"),
                    "lost": bool(t.user_attrs.get("lost")),
                    "sem": {o.name: s for o, s in zip(self.objectives, sems) if s is not None},
                    "n_repeats": {name: len(v) for name, v in reps.items()},
                    "pruned_at": t.user_attrs.get("pruned_at"),
                }
            )
        complete = [h for h in history if h["state"] == "COMPLETE"]
        if complete:
            Y = np.array([[h["values"][o.name] for o in self.objectives] for h in complete])
            mask = pareto_mask(to_max(Y, [o.direction for o in self.objectives]))
            for h, m in zip(complete, mask):
                h["pareto"] = bool(m)
        pareto = [h for h in complete if h.get("pareto")]
        ranking = None
        stored = study.user_attrs.get(MOPIR_ATTR)
        if stored:
            ranking = MOPIRResult.from_dict(stored)
        elif self.mopir_options is not None and len(complete) >= 3:
            X = np.array(
                [
                    self.space.to_unit(h["params"])
                    for h in complete
                    if all(n in h["params"] for n in self.space.names)
                ]
            )
            if len(X) == len(complete):
                Y = np.array([[h["values"][o.name] for o in self.objectives] for h in complete], float)
                Y = log_columns(Y, [i for i, o in enumerate(self.objectives) if o.log_scale], floor=1e-12)
                opts = {k: v for k, v in self.mopir_options.items() if k != "freeze"}
                try:
                    ranking = run_mopir(
                        X, Y, self.space.names, [o.name for o in self.objectives], seed=self.seed, **opts
                    )
                except ValueError:
                    ranking = None
        return TuningResult(
            history=history, pareto=pareto, mopir=ranking, objectives=self.objectives, study=study
        )
