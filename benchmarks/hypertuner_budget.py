"""HyperTuner on a real tuning budget: multi-objective early stopping (pruning) against no pruning and
Optuna's GPSampler / TPE / NSGA-II, on the digits LeNet-5 task.

Task: LeNet-5 on scikit-learn's 8x8 digits upsampled to 16x16 (the smallest input LeNet-5 takes), 600 train / 450 val images
(stratified),
Adam, ``--epochs`` epochs (6). Tuned: ``lr`` (log), ``width``, ``batch_size``, ``precision`` (32 or bf16
autocast), ``torch_threads`` (1 or 2). Objectives: ``val_acc`` (max) and ``time`` (min) where
``time`` is the trial's **CPU seconds** (``time.process_time``, all threads): the machine is shared, so
wall seconds vary by tens of percent for the same work, CPU seconds much less.

``OMP_WAIT_POLICY=PASSIVE`` is set (unless given): with spinning idle threads, ``torch_threads: 2`` cost
10-40x the CPU seconds of one thread on this oversubscribed 2-core machine and swamped every budget.
One warm-up epoch runs before the first method (data loading and first-call costs stay off the axis).

Budget and time axis: every method runs trials until the **summed trial CPU seconds** reach ``--budget``
(the trial that crosses it is the last one counted). The time axis of every curve is that sum; the
suggestion cost of the samplers is *not* on it (it is printed separately). Hypervolume: both objectives
mapped to [0, 1] over the complete (full-fidelity) trials of all methods of one seed (``time`` on a log
scale), reference point -0.1, divided by 1.1^2 (as :func:`lightning_addons.tuner.report.hv_curve`).
Pruned trials never count in the hypervolume (their values are partial).

Printed per seed and as medians: final HV of each method at the budget; for HyperTuner with early
stopping (``ht_es``), the share of the budget it needs to reach the final HV of HyperTuner without it
(``ht``) (acceptance: <= 0.60); and the re-run check: the ``--rerun`` pruned trials with the best partial
values are trained to completion and counted if they would have entered the final front of ``ht_es``.
Also printed: the tuner's CPU outside the trials per run, and the HV of every method at equal *total* CPU
(trials + tuner). ``ht_es`` uses ``PRUNER`` unless ``--pruner`` gives another (JSON); ``ht_nogrid`` (not
run by default) is the ablation of ADUMBO without rounding its discrete inputs to their grid.

``--time-unit ref`` puts every trial's ``time`` and the budget on a load-independent clock instead: CPU
seconds divided by a reference kernel's CPU seconds (10 training steps of the task's default model), timed
at the start of every trial and after every epoch (the kernel's own CPU is on no axis); with nothing else
running, a trial's reference seconds came to 0.56-0.87 of its CPU seconds (ETTh1). A results file holds
one unit. ``--cross-runs`` adds how often the per-seed acceptance test passes over every ordered pair of
runs in ``--out``, beside the same test between two runs without pruning (the null).

Reproduce (one thread, niced; results appended to JSONL, ``--summary-only`` re-prints)::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/hypertuner_budget.py --seeds 0 1 2 \
        --out runs/hypertuner_budget.jsonl

Forecasting task (``--task etth1``): iTransformer on ETTh1 (lookback 96, horizon 96; 384 training and
256 validation windows of the standard split; ``--train-windows 0``: all 8,449 training windows, the size
a user tunes at, where one trial costs 3-30 CPU-s and the tuner's own CPU is 3-6% of the run),
``--epochs`` 4. Tuned: ``lr`` (log), ``d_model``
(16/32/64), ``num_layers`` (1-3), ``mixer`` (attention, or RAM: ``mlp``), ``batch_size`` (16/32/64).
Objectives: ``val_mse`` (min; ``-log val_mse`` in the hypervolume) and ``time`` (trial CPU seconds)::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/hypertuner_budget.py --task etth1 --seeds 0 1 2 \
        --budget 15 --out runs/hypertuner_etth1.jsonl --plot docs/figures/hypertuner_etth1.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# idle OpenMP threads sleep instead of spinning: on an oversubscribed shared machine a spinning second
# thread burned 10-40x the CPU seconds of the work (13-17 CPU-s vs 0.3-1.7 for one thread, measured)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

METHODS = ("ht", "ht_es", "gp", "tpe", "nsga2")
# ablation, not run by default: ADUMBO treating categorical/int inputs as continuous (no rounding to their grid)
EXTRA_METHODS = ("ht_nogrid",)
ALGORITHM = {"ht": "adumbo", "ht_es": "adumbo", "gp": "gp", "tpe": "tpe", "nsga2": "nsga2"}
ALGORITHM["ht_nogrid"] = "adumbo"
OPTIMIZER_KWARGS = {"ht_nogrid": {"grid": None}}
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "default": 1e-3},
    "width": {"type": "float", "low": 0.25, "high": 1.5, "default": 1.0},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128], "default": 64, "layer": "system"},
    "precision": {"type": "categorical", "choices": ["32", "bf16-mixed"], "default": "32", "layer": "system"},
    "torch_threads": {"type": "categorical", "choices": [1, 2], "default": 1, "layer": "system"},
}
SPACE_DEFAULTS = {k: v["default"] for k, v in SPACE.items()}
OBJECTIVES = ["val_acc:max", "time:min"]
PRUNER = {"name": "pareto_halving", "min_resource": 2, "reduction_factor": 2, "min_peers": 4, "margin": 0.05}
# the first stop's pruner (rungs at epochs 1 and 3)
PRUNER_H16B = {"name": "pareto_halving", "min_resource": 1, "reduction_factor": 3, "min_peers": 4}


class BudgetSpent(BaseException):
    """Stops a tuning run once the summed trial CPU seconds reach the budget."""


# --time-unit ref: CPU seconds inflate with the load of the shared machine (one ETTh1 epoch of the default
# configuration, whole split: 2.5-2.9 CPU-s alone, 4.7-5.0 beside three busy processes on the 2 cores), and
# a reference kernel (REF_STEPS training steps of the task's default model on a fixed batch, one thread)
# inflates with it (0.16 -> 0.31 CPU-s for 20 steps). Two epochs of three configurations, alone / beside one /
# beside three busy processes (two runs each): CPU seconds spread 5.8-9.7 (default), 1.4-2.5 (cheapest),
# 14.3-20.7 (largest); the reference clock 4.6-5.5, 1.1-1.5, 10.9-13.6 (docs/results/hypertuner_es_ref_clock.md).
# REF_SCALE converts kernels back to seconds (about the kernel's CPU seconds on this machine; a unit,
# not a tuned constant: any value rescales the time axis and the budget together).
TIME_UNITS = ("cpu", "ref")
REF_SCALE = {"digits_small": 0.035, "digits_full": 0.11, "etth1": 0.08}


def ref_scale(task: str) -> float:
    """Seconds per reference kernel for ``task`` (digits: at the current ``--digits-size``)."""
    return REF_SCALE[f"digits_{DIGITS_SIZE}" if task == "digits" else task]


REF_STEPS = 10


class Clock:
    """The benchmark's time axis. ``unit="cpu"``: process CPU seconds. ``unit="ref"``: process CPU seconds,
    each stretch divided by the reference kernel's CPU seconds measured at both its ends (mean) and
    multiplied by :func:`ref_scale`; the kernel's own CPU is on neither axis. :meth:`probe` times the
    kernel (a no-op for ``cpu``); call it at the start of every trial and after every epoch."""

    def __init__(self, unit: str = "cpu", task: str = "digits") -> None:
        if unit not in TIME_UNITS:
            raise ValueError(f"`--time-unit` must be one of {list(TIME_UNITS)}, got {unit!r}.")
        self.unit, self.task = unit, task
        self.scaled = 0.0  # the clock's reading at `raw_seen`
        self.raw_seen = time.process_time()
        self.probe_cpu = 0.0  # the kernel's own CPU, taken off the raw clock
        self.last_ref: float | None = None
        self.kernel = None

    def _raw(self) -> float:
        return time.process_time() - self.probe_cpu

    def _factor(self, ref: float | None = None) -> float:
        if self.unit == "cpu" or self.last_ref is None:
            return 1.0
        r = self.last_ref if ref is None else 0.5 * (self.last_ref + ref)
        return ref_scale(self.task) / r

    def _advance(self, raw: float, factor: float) -> None:
        self.scaled += (raw - self.raw_seen) * factor
        self.raw_seen = raw

    def now(self) -> float:
        self._advance(self._raw(), self._factor())
        return self.scaled

    def probe(self) -> None:
        if self.unit == "cpu":
            return
        if self.kernel is None:
            self.kernel = _ref_kernel(self.task)
            self.kernel()  # first-call costs off the measurement
        raw = self._raw()
        p0 = time.process_time()
        self.kernel()
        ref = time.process_time() - p0
        self.probe_cpu += ref
        # the stretch since the last reading, scaled by the mean of the kernel times at its two ends
        # (unscaled before the first kernel: _factor is 1 while there is no earlier one)
        self._advance(raw, self._factor(ref))
        self.last_ref = ref


def _ref_kernel(task: str):
    """``REF_STEPS`` training steps of the task's default model on a fixed batch, one thread."""
    import torch

    torch.manual_seed(0)
    p = {k: v["default"] for k, v in TASKS[task]["space"].items()}
    if task == "etth1":
        from lightning_addons.modules.nn import ITransformer

        d = etth1_data()
        dm = int(p["d_model"])
        model = ITransformer(window=ETTH1_WINDOW, horizon=ETTH1_HORIZON, d_model=dm, d_ff=dm, n_heads=4,
                             num_layers=int(p["num_layers"]), dropout=0.1, mixer=str(p["mixer"]))  # fmt: skip
        loss_fn = torch.nn.functional.mse_loss
    else:
        from lightning_addons.modules.nn import LeNet5

        d = digits_data()
        model = LeNet5(width=float(p["width"]), input_size=DIGITS_SIZES[DIGITS_SIZE][0])
        loss_fn = torch.nn.functional.cross_entropy
    x, y = d["Xtr"][: int(p["batch_size"])], d["ytr"][: int(p["batch_size"])]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def kernel() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for _ in range(REF_STEPS):
                loss = loss_fn(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)

    return kernel


CLOCK = Clock()


def set_time_unit(unit: str, task: str) -> None:
    global CLOCK
    CLOCK = Clock(unit, task)


def timed_train(task: str, params: dict, report=None, epochs: int = 4, seed: int = 0, spent=None) -> dict:
    """Run the task's trial with its ``time`` (per epoch and at the end) read from :data:`CLOCK`, less the
    CPU spent inside ``report`` (the tuner's work). ``spent["time"]`` receives the trial's time also when
    it ends with an exception (pruned or failed)."""
    CLOCK.probe()
    t0 = CLOCK.now()
    inside = [0.0]  # clock time spent inside report()
    spent = {} if spent is None else spent

    def rep(step, metrics):
        CLOCK.probe()
        r0 = CLOCK.now()
        t = r0 - t0 - inside[0]
        try:
            return report(step, {**metrics, "time": t}) if report is not None else None
        finally:
            inside[0] += CLOCK.now() - r0

    try:
        out = _train_fn(task)(params, rep, epochs=epochs, seed=seed)
    finally:
        spent["time"] = CLOCK.now() - t0 - inside[0]
    return {**out, "time": spent["time"]}


_DATA: dict = {}
# --digits-size: "small" (16x16 inputs, 600 training images; trials 0.15-0.5 CPU-s, about what one suggestion
# costs) or "full" (LeNet-5's own 32x32 inputs and every image outside the validation set, 1,347: 8-10x the
# trial cost, so the tuner's CPU is a small part of the run, as when tuning real training runs)
DIGITS_SIZES = {"small": (16, 600), "full": (32, 1347)}
DIGITS_SIZE = "small"


def set_digits_size(size: str) -> None:
    global DIGITS_SIZE
    if size not in DIGITS_SIZES:
        raise ValueError(f"`--digits-size` must be one of {sorted(DIGITS_SIZES)}, got {size!r}.")
    DIGITS_SIZE = size
    _DATA.clear()


def digits_data():
    if not _DATA:
        import torch
        import torch.nn.functional as F
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        X, y = load_digits(return_X_y=True)
        X = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        side, n_train = DIGITS_SIZES[DIGITS_SIZE]
        X = F.interpolate(X, size=side, mode="bilinear", align_corners=False)
        y = torch.tensor(y)
        itr, iva = train_test_split(
            np.arange(len(y)), train_size=n_train, test_size=450, stratify=y.numpy(), random_state=0
        )
        _DATA.update(Xtr=X[itr], ytr=y[itr], Xva=X[iva], yva=y[iva])
    return _DATA


def train_digits(params, report=None, epochs: int = 9, seed: int = 0) -> dict:
    """Train LeNet-5 on digits; ``report(epoch, {"val_acc", "time"})`` after each epoch."""
    import torch

    from lightning_addons.modules.nn import LeNet5

    d = digits_data()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(params["torch_threads"]))
    c0 = time.process_time()
    try:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = LeNet5(width=float(params["width"]), input_size=DIGITS_SIZES[DIGITS_SIZE][0])
        opt = torch.optim.Adam(model.parameters(), lr=float(params["lr"]))
        bs = int(params["batch_size"])
        autocast = params["precision"] == "bf16-mixed"
        acc = 0.0
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(len(d["ytr"]), generator=g)
            for i in range(0, len(perm), bs):
                idx = perm[i : i + bs]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = torch.nn.functional.cross_entropy(model(d["Xtr"][idx]), d["ytr"][idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                acc = float((model(d["Xva"]).argmax(1) == d["yva"]).float().mean())
            if not np.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}")
            if report is not None:
                report(epoch, {"val_acc": acc, "time": time.process_time() - c0})
        return {"val_acc": acc, "time": time.process_time() - c0}
    finally:
        torch.set_num_threads(old_threads)


# ------------------------------------------------------------------ forecasting task (--task etth1)
# iTransformer on ETTh1 (7 variables, lookback 96, horizon 96; standard 12/4/4-month split, z-scores from
# the training rows), kept small so that one trial costs about 0.15-1.7 CPU-s: 384 training windows (a fixed
# random subset of the 8,449 of the training split), 256 validation windows (evenly spaced over the
# validation split), ``--epochs`` epochs (4). ``mixer``: "attention" or "mlp" (RAM on: the attention
# block replaced by nothing, the MLP-replaced-attention forecaster of this project).
ETTH1_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True, "default": 1e-3},
    "d_model": {"type": "categorical", "choices": [16, 32, 64], "default": 32},
    "num_layers": {"type": "int", "low": 1, "high": 3, "default": 2},
    "mixer": {"type": "categorical", "choices": ["attention", "mlp"], "default": "attention"},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64], "default": 32, "layer": "system"},
}
ETTH1_OBJECTIVES = ["val_mse:min", "time:min"]
ETTH1_WINDOW, ETTH1_HORIZON, ETTH1_TRAIN_WINDOWS, ETTH1_VAL_WINDOWS = 96, 96, 384, 256
_ETTH1: dict = {}


def set_etth1_train_windows(n: int) -> None:
    """Train on ``n`` windows of the training split (a fixed random subset; ``0``: all 8,449)."""
    global ETTH1_TRAIN_WINDOWS
    if n < 0:
        raise ValueError(f"`--train-windows` must be >= 0 (0: the whole training split), got {n}.")
    ETTH1_TRAIN_WINDOWS = n
    _ETTH1.clear()


def etth1_data():
    if not _ETTH1:
        import torch

        from lightning_addons.data import shared_data_path
        from lightning_addons.datamodules.timeseries import ETT_HOURLY_SPLITS, load_etth1

        values = load_etth1(shared_data_path("ETTh1.csv")).drop(columns="date").to_numpy(np.float32)
        n_tr, n_va, _ = ETT_HOURLY_SPLITS
        mean, std = values[:n_tr].mean(0), values[:n_tr].std(0)
        z = torch.as_tensor((values - mean) / std)
        span = ETTH1_WINDOW + ETTH1_HORIZON

        def windows(starts):
            idx = torch.as_tensor(starts)[:, None] + torch.arange(span)[None]
            w = z[idx]  # [B, T + H, 7]
            return w[:, :ETTH1_WINDOW, :, None].contiguous(), w[:, ETTH1_WINDOW:, :, None].contiguous()

        rng = np.random.default_rng(0)
        n_all = n_tr - span + 1
        if 0 < ETTH1_TRAIN_WINDOWS < n_all:
            tr = np.sort(rng.choice(n_all, ETTH1_TRAIN_WINDOWS, replace=False))
        else:
            tr = np.arange(n_all)
        # validation windows: targets inside the validation split, lookback may reach back into train
        va = np.linspace(n_tr - ETTH1_WINDOW, n_tr + n_va - span, ETTH1_VAL_WINDOWS).astype(int)
        Xtr, Ytr = windows(tr)
        Xva, Yva = windows(va)
        _ETTH1.update(Xtr=Xtr, ytr=Ytr, Xva=Xva, yva=Yva)
    return _ETTH1


def train_etth1(params, report=None, epochs: int = 4, seed: int = 0) -> dict:
    """Train iTransformer on the ETTh1 subset; ``report(epoch, {"val_mse", "time"})`` after each epoch
    (``val_mse``: MSE on the z-scored validation windows, all 7 variables, horizon 96)."""
    import torch

    from lightning_addons.modules.nn import ITransformer

    d = etth1_data()
    c0 = time.process_time()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dm = int(params["d_model"])
    model = ITransformer(
        window=ETTH1_WINDOW,
        horizon=ETTH1_HORIZON,
        d_model=dm,
        d_ff=dm,
        n_heads=4,
        num_layers=int(params["num_layers"]),
        dropout=0.1,
        mixer=str(params["mixer"]),
    )
    opt = torch.optim.Adam(model.parameters(), lr=float(params["lr"]))
    bs = int(params["batch_size"])
    mse = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(d["ytr"]), generator=g)
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            loss = torch.nn.functional.mse_loss(model(d["Xtr"][idx]), d["ytr"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            mse = float(torch.nn.functional.mse_loss(model(d["Xva"]), d["yva"]))
        if not np.isfinite(mse):
            raise FloatingPointError(f"non-finite validation MSE at epoch {epoch}")
        if report is not None:
            report(epoch, {"val_mse": mse, "time": time.process_time() - c0})
    return {"val_mse": mse, "time": time.process_time() - c0}


# per task: search space, objectives, trial function, default epochs and budget (summed trial CPU-s)
TASKS = {
    "digits": {
        "space": SPACE,
        "objectives": OBJECTIVES,
        "train": "train_digits",
        "epochs": 6,
        "budget": 20.0,
    },
    "etth1": {
        "space": ETTH1_SPACE,
        "objectives": ETTH1_OBJECTIVES,
        "train": "train_etth1",
        "epochs": 4,
        "budget": 15.0,
    },
}


def _train_fn(task: str):
    return globals()[TASKS[task]["train"]]


def _with_max_resource(spec: dict, epochs: int) -> dict:
    """The pruner spec with ``max_resource`` = the trial's epochs unless it names one: no rung at the last
    epoch, which would throw a finished trial's result away (``PRUNER``'s rungs 2 and 4 on the 4-epoch
    ETTh1 task did that before)."""
    return spec if "max_resource" in spec else {**spec, "max_resource": epochs}


def run_method(
    method: str,
    seed: int,
    budget: float,
    epochs: int,
    workdir: Path,
    n_init: int,
    pruner: dict | None = None,
    task: str = "digits",
) -> dict:
    """One tuning run until the summed trial CPU seconds reach ``budget``; returns its trials."""
    import optuna

    from lightning_addons.tuner import HyperTuner

    spent = {"cpu": 0.0, "suggest": 0.0}
    ends: list[float] = []  # clock (trials + tuner) since the run started, at the end of each trial
    curves: list[list] = []  # per started trial: [step, quality, time] after each epoch (for --oracle)
    CLOCK.probe()  # so that the tuner's time before the first trial is on the clock's unit too
    c_start = CLOCK.now()
    names = [o.split(":")[0] for o in TASKS[task]["objectives"]]

    def fn(params, report):
        if spent["cpu"] >= budget:
            raise BudgetSpent
        curve: list = []
        curves.append(curve)

        # the tuner's work inside report() (storing the step's vector, reading the peers, the pruner's
        # decision) is tuner CPU, not trial CPU: a Lightning trial's worker does it outside the trial
        # process. timed_train takes it out of the trial's `time` and so of the budget (measured: ~0.01 ms
        # per report without a pruner, 3 ms with pareto_halving, 19 ms with learning_curve on a 60-trial
        # SQLite study, against trials of 0.15-0.5 CPU-s)
        def rep(step, metrics):
            curve.append([int(step)] + [float(metrics[k]) for k in names])
            return report(step, metrics)

        box: dict = {}
        try:
            return timed_train(task, params, rep, epochs=epochs, seed=seed, spent=box)
        finally:
            spent["cpu"] += box.get("time", 0.0)
            ends.append(CLOCK.now() - c_start)

    storage = f"sqlite:///{workdir}/{method}_{seed}.db"
    tuner = HyperTuner(
        space=TASKS[task]["space"],
        objectives=TASKS[task]["objectives"],
        trial_fn=fn,
        algorithm=ALGORITHM[method],
        n_trials=10_000,
        n_init=n_init,
        seed=seed,
        storage=storage,
        study_name=f"{method}_{seed}",
        output_dir=workdir / f"{method}_{seed}",
        progress=False,
        mopir=False,
        pruner=_with_max_resource(pruner or PRUNER, epochs) if method == "ht_es" else None,
        optimizer_kwargs=OPTIMIZER_KWARGS.get(method),
    )
    c_all = CLOCK.now()
    probe0 = CLOCK.probe_cpu
    w0 = time.perf_counter()
    try:
        tuner.run()
    except BudgetSpent:
        pass
    wall = time.perf_counter() - w0
    total_cpu = CLOCK.now() - c_all
    study = optuna.load_study(study_name=f"{method}_{seed}", storage=storage)
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        steps = sorted(int(k.split("@")[1]) for k in t.user_attrs if k.startswith("objectives@"))
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "values": list(t.values) if t.values else t.user_attrs.get("partial_values"),
                "pruned_at": t.user_attrs.get("pruned_at"),
                "last_step": steps[-1] if steps else None,
                "cpu": None,
            }
        )
    # the trial CPU seconds are its `time` objective (complete) or partial `time` (pruned)
    for tr in trials:
        tr["cpu"] = float(tr["values"][1])
    # process CPU (trials + tuner) at the end of each trial: fn ran once per started trial, in number order
    started = sorted(
        t.number for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED", "FAIL")
    )
    at_end = dict(zip(started, ends))
    at_curve = dict(zip(started, curves))
    for tr in trials:
        tr["total_cpu_at_end"] = at_end.get(tr["number"])
        tr["curve"] = at_curve.get(tr["number"])
    return {
        "method": method,
        "task": task,
        "seed": seed,
        "budget": budget,
        "trials": trials,
        "trial_cpu": spent["cpu"],
        "tuner_cpu_outside_trials": total_cpu - spent["cpu"],
        "wall": wall,
        "probe_cpu": CLOCK.probe_cpu - probe0,  # the reference kernel's CPU (--time-unit ref), on no axis
        "pruner": _with_max_resource(pruner or PRUNER, epochs) if method == "ht_es" else None,
    }


def _F(values: np.ndarray, task: str = "digits") -> np.ndarray:
    """(quality, time) -> maximisation space: ``val_acc`` as is (digits) or ``-log val_mse`` (etth1), and
    ``-log time``."""
    q = values[:, 0] if task == "digits" else -np.log(values[:, 0])
    return np.column_stack([q, -np.log(values[:, 1])])


def _Z(values: np.ndarray, lo, hi, task: str = "digits") -> np.ndarray:
    """(quality, time) -> maximisation space (:func:`_F`) mapped to [0, 1] by ``lo``/``hi``."""
    return (_F(values, task) - lo) / np.where(hi > lo, hi - lo, 1.0)


def hv_curve(run: dict, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """(summed trial CPU after each trial, HV of the complete trials so far) of one run."""
    from lightning_addons.tuner._pareto import hypervolume

    cum, hv, pts = [], [], []
    total = 0.0
    for tr in sorted(run["trials"], key=lambda t: t["number"]):
        total += tr["cpu"]
        if tr["state"] == "COMPLETE":
            pts.append(tr["values"])
        cum.append(total)
        task = run.get("task", "digits")
        hv.append(hypervolume(_Z(np.array(pts), lo, hi, task), [-0.1, -0.1]) / 1.21 if pts else 0.0)
    return np.array(cum), np.array(hv)


def rerun_check(run: dict, k: int, epochs: int, seed: int) -> dict:  # noqa: C901
    """Train the ``k`` pruned trials with the best partial values to completion; how many would enter the
    final front of the run (not dominated by any of its complete trials)?"""
    from lightning_addons.tuner._pareto import dominates
    from lightning_addons.tuner.pruners import nondominated_ranks

    pruned = [t for t in run["trials"] if t["state"] == "PRUNED"]
    complete = np.array([t["values"] for t in run["trials"] if t["state"] == "COMPLETE"], float)
    if not pruned or not len(complete):
        return {"n_pruned": len(pruned), "rerun": 0, "entered": 0, "details": []}
    # best partial values: latest rung first, then non-dominated rank of (val_acc, -time) among them
    task = run.get("task", "digits")
    P = _F(np.array([t["values"] for t in pruned], float), task)
    rank = nondominated_ranks(P)
    order = sorted(range(len(pruned)), key=lambda i: (-pruned[i]["pruned_at"], rank[i], -P[i, 0]))
    details, entered = [], 0
    F_front = _F(complete, task)
    for i in order[:k]:
        t = pruned[i]
        full = timed_train(task, t["params"], None, epochs=epochs, seed=seed)
        f = _F(np.array([list(full.values())], float), task)
        enters = not bool(dominates(F_front, f).any())
        entered += enters
        details.append(
            {
                "number": t["number"],
                "pruned_at": t["pruned_at"],
                "partial": t["values"],
                "full": full,
                "enters_front": enters,
            }  # fmt: skip
        )
    return {"n_pruned": len(pruned), "rerun": len(details), "entered": entered, "details": details}


def _stream(run: dict) -> tuple[list[dict], np.ndarray, int, float]:
    """A run's trials in order, which of them end on its final front, the index of the last front trial
    and the run's summed trial CPU (shared by :func:`oracle_share` and :func:`replay_share`)."""
    from lightning_addons.tuner._pareto import nondominated_mask

    trs = sorted(run["trials"], key=lambda t: t["number"])
    on_front = nondominated_mask(_F(np.array([t["values"] for t in trs], float), run.get("task", "digits")))
    return trs, on_front, int(np.flatnonzero(on_front)[-1]), float(sum(t["cpu"] for t in trs))


def _share_total_cpu(run: dict, trs: list[dict], costs: list[float], last: int) -> float:
    """The share of the run's total CPU (trials + tuner: suggestions, storage; the cost a user waits for)
    at which a pruned replay of its trial stream completes the last front trial: the run's process CPU at
    the end of that trial less the trial CPU the replay saved up to it (``nan`` for runs recorded without
    ``total_cpu_at_end``)."""
    end = trs[last].get("total_cpu_at_end")
    if end is None:
        return float("nan")
    saved = sum(t["cpu"] - c for t, c in zip(trs[: last + 1], costs[: last + 1]))
    return float((end - saved) / (run["trial_cpu"] + run["tuner_cpu_outside_trials"]))


def oracle_share(run: dict, rung: int) -> dict:
    """Post-hoc bound on what pruning could save on one run's trial stream (a run without pruning, ``ht``):
    an *oracle* pruner stops every trial that is not on the run's final front at epoch ``rung`` and runs
    every front trial fully. Replaying the same trials in the same order with those costs, the run's final
    HV is reached when its last front trial completes; returned: that summed trial CPU as a share of the
    run's summed trial CPU (``share``), the same without pruning (``share_no_pruning``: where the run itself
    first reached its final HV), and the counts. A trial's CPU at ``rung`` is read from its per-epoch curve
    (``exact`` False: runs recorded without curves scale the trial's CPU by ``rung / epochs``)."""
    if any(t["state"] != "COMPLETE" for t in run["trials"]):
        raise ValueError(
            f"oracle_share: run {run['method']} seed {run['seed']} has pruned trials (use a run without pruning)."
        )
    trs, on_front, last, total = _stream(run)
    epochs = run.get("epochs") or TASKS[run.get("task", "digits")]["epochs"]
    exact, costs = True, []
    for t, front in zip(trs, on_front):
        if front:
            costs.append(t["cpu"])
            continue
        at = [c for c in (t.get("curve") or []) if c[0] == rung]
        if at:
            costs.append(at[0][-1])
        else:
            exact = False
            costs.append(t["cpu"] * rung / epochs)
    return {
        "seed": run["seed"],
        "rung": rung,
        "share": float(sum(costs[: last + 1]) / total),
        # the same on the total-CPU axis (trials + tuner), the cost a user waits for
        "share_total_cpu": _share_total_cpu(run, trs, costs, last),
        "share_total_cpu_no_pruning": _share_total_cpu(run, trs, [t["cpu"] for t in trs], last),
        "share_no_pruning": float(sum(t["cpu"] for t in trs[: last + 1]) / total),
        "front": int(on_front.sum()),
        "trials": len(trs),
        "last_front_trial": trs[last]["number"],
        "exact": exact,
    }


def replay_share(run: dict, pruner_spec: dict) -> dict:
    """Replay a run without pruning (``ht``) through a pruner, post hoc: the trials in the same order, each
    one's recorded per-epoch vectors offered to ``pruner_spec`` at every step (with the complete pairs of
    the trials completed so far in the replay, as the tuner passes them to a learning-curve rule). Returned:
    the share of the run's summed trial CPU at which the replay reaches the run's final HV (all its front
    trials complete; ``inf`` when the pruner stopped a front trial), the pruned count and the front trials
    pruned. Same trial stream as :func:`oracle_share`, so the two compare pruning quality without a second
    tuning trajectory's noise."""
    from lightning_addons.tuner.pruners import make_pruner

    pruner = make_pruner(pruner_spec)
    task = run.get("task", "digits")
    dirs = [o.split(":")[1] for o in TASKS[task]["objectives"]]
    log_scale = [o.startswith("time") for o in TASKS[task]["objectives"]]
    trs, on_front, last, total = _stream(run)
    from lightning_addons.tuner.space import SearchSpace

    space = SearchSpace(TASKS[task]["space"])
    defaults = space.defaults()

    def unit(t: dict) -> list[float]:
        return space.to_unit({**defaults, **t["params"]}).tolist()

    done: list[dict] = []
    costs, pruned = [], []
    for t in trs:
        stop = None
        for c in t["curve"][:-1]:
            step, vec = int(c[0]), list(c[1:])
            if not pruner.is_rung(step):
                continue
            prev = [(d["curve"][step - 1][1:], d["values"]) for d in done if len(d["curve"]) >= step]
            peers = [p for p, _ in prev]
            kw = {"complete": prev, "log_scale": log_scale} if getattr(pruner, "uses_complete", False) else {}
            if kw and getattr(pruner, "uses_params", False):  # as the tuner passes them
                kw.update(params=unit(t), complete_params=[unit(d) for d in done if len(d["curve"]) >= step])
            if pruner.should_prune(step, vec, peers, dirs, **kw):
                stop = c
                break
        if stop is None:
            done.append(t)
            costs.append(t["cpu"])
        else:
            pruned.append(t["number"])
            costs.append(stop[-1])
    front_pruned = [t["number"] for t, f in zip(trs, on_front) if f and t["number"] in pruned]
    share_total = _share_total_cpu(run, trs, costs, last) if not front_pruned else float("inf")
    return {
        "seed": run["seed"],
        "share": float(sum(costs[: last + 1]) / total) if not front_pruned else float("inf"),
        "share_total_cpu": share_total,
        "pruned": len(pruned),
        "trials": len(trs),
        "front_pruned": front_pruned,
        "cpu_saved": float(1 - sum(costs) / total),
    }


def summarise_oracle(rows: list[dict], rungs, method: str = "ht", replay: dict | None = None) -> None:
    """Print :func:`oracle_share` for every ``method`` run (acceptance: HyperTuner with early stopping
    reaches ``ht``'s final HV in <= 0.60 of ``ht``'s budget; an oracle share above 0.60 says no pruner
    of this trial stream could)."""
    runs = sorted(
        (r for r in rows if r.get("kind") == "run" and r["method"] == method), key=lambda r: r["seed"]
    )
    print(
        f"\noracle pruner on the {method} runs (non-front trials stopped at the rung, front trials run fully):"
    )
    for r in runs:
        for rung in rungs:
            o = oracle_share(r, rung)
            print(
                f"  seed {o['seed']} rung {rung}: reaches the final HV at {o['share']:.3f} of the budget "
                f"(without pruning {o['share_no_pruning']:.3f}; {o['front']} front trials of {o['trials']}, "
                f"last front trial #{o['last_front_trial']}){'' if o['exact'] else ' [cost at rung scaled]'}; "
                f"of the total CPU (trials + tuner) {o['share_total_cpu']:.3f} "
                f"(without pruning {o['share_total_cpu_no_pruning']:.3f})"
            )
        if replay and all(t.get("curve") for t in r["trials"]):
            p = replay_share(r, replay)
            print(
                f"  seed {p['seed']} replayed through {json.dumps(replay)}: reaches the final HV at "
                f"{p['share']:.3f} (of the total CPU {p['share_total_cpu']:.3f}); pruned {p['pruned']} of "
                f"{p['trials']} (front trials pruned: "
                f"{p['front_pruned'] or 'none'}); {p['cpu_saved']:.0%} of the trial CPU saved"
            )


def cross_run_shares(rows: list[dict], method: str = "ht_es", baseline: str = "ht") -> dict:
    """How often does a run reach another run's final HV at <= 0.60 of that run's budget?

    Every ordered pair (A, B) of runs of one task, A a ``baseline`` run and B another run: the share of A's
    time at which B first reaches A's final HV. ``null``: B a ``baseline`` run too (no pruning, another seed
    or the same seed re-run), i.e. how often the per-seed acceptance test passes with no effect at all;
    ``test``: B a ``method`` run. One normalisation over the complete trials of all runs (the per-seed
    summary normalises per seed), so the runs need one task, size and time unit. Runs recorded twice (a
    per-seed file merged into a combined one) count once."""
    seen, runs = set(), []
    for r in rows:
        if r.get("kind") != "run" or r["method"] not in (method, baseline):
            continue
        key = (r["method"], r["seed"], round(float(r["trial_cpu"]), 6), len(r["trials"]))
        if key not in seen:
            seen.add(key)
            runs.append(r)
    base = [r for r in runs if r["method"] == baseline]
    if len(base) < 2:
        raise ValueError(f"cross-run shares need at least two {baseline!r} runs, got {len(base)}.")
    allv = np.array([t["values"] for r in runs for t in r["trials"] if t["state"] == "COMPLETE"])
    F = _F(allv, runs[0].get("task", "digits"))
    curves = [hv_curve(r, F.min(0), F.max(0)) for r in runs]
    out: dict = {"null": [], "test": []}
    for a, (ra, ca) in enumerate(zip(runs, curves)):
        if ra["method"] != baseline:
            continue
        for b, (rb, cb) in enumerate(zip(runs, curves)):
            if a != b:
                share = _first_share(cb[0], cb[1], float(ca[1][-1]), float(ca[0][-1]))
                out["null" if rb["method"] == baseline else "test"].append(share)
    return out


def summarise_cross_runs(rows: list[dict]) -> None:
    try:
        x = cross_run_shares(rows)
    except ValueError as e:  # the runs are stored; say what is missing, without a traceback
        raise SystemExit(f"--cross-runs: {e} Add runs (other seeds) to --out.") from None
    print("\ncross-run reach shares (every ordered pair of runs; one HV normalisation over all runs):")
    for lab, key in (("ht vs another ht run (no pruning: the null)", "null"), ("ht_es vs an ht run", "test")):
        v = np.array(x[key])
        if len(v):
            print(
                f"  {lab}: {len(v)} pairs, reach at <= 0.60: {np.mean(v <= 0.6):.2f}, reach at all: "
                f"{np.mean(np.isfinite(v)):.2f}"
            )


def plot(rows: list[dict], methods, path: str) -> None:
    """HV against summed trial CPU seconds, one panel per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        if r.get("kind") == "run":
            by_seed.setdefault(r["seed"], {})[r["method"]] = r
    fig, axes = plt.subplots(1, len(by_seed), figsize=(4.2 * len(by_seed), 3.4), squeeze=False)
    for ax, (seed, runs) in zip(axes[0], sorted(by_seed.items())):
        allv = np.array([t["values"] for r in runs.values() for t in r["trials"] if t["state"] == "COMPLETE"])
        F = _F(allv, next(iter(runs.values())).get("task", "digits"))
        for m in methods:
            if m in runs:
                c, h = hv_curve(runs[m], F.min(0), F.max(0))
                ax.step(c, h, where="post", label=m)
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("summed trial CPU seconds")
        ax.set_ylabel("hypervolume (normalised)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def hv_curve_total_cpu(run: dict, lo, hi) -> tuple[np.ndarray, np.ndarray, bool]:
    """(process CPU of trials + tuner after each trial, HV so far, exact?) of one run. Runs recorded before
    ``total_cpu_at_end`` existed spread the tuner's CPU evenly over their trials (``exact`` False)."""
    c, h = hv_curve(run, lo, hi)
    trs = sorted(run["trials"], key=lambda t: t["number"])
    if trs and all(t.get("total_cpu_at_end") is not None for t in trs):
        return np.array([t["total_cpu_at_end"] for t in trs]), h, True
    extra = run["tuner_cpu_outside_trials"] / max(len(trs), 1)
    return c + extra * np.arange(1, len(c) + 1), h, False


def summarise_total_cpu(rows: list[dict], methods) -> None:
    """HV of each method when the tuner's own CPU is on the axis too, at the smallest total CPU any
    method of the seed reached (all methods have run that long)."""
    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        if r.get("kind") == "run":
            by_seed.setdefault(r["seed"], {})[r["method"]] = r
    print("\nHV at equal total CPU (trials + tuner; * = tuner CPU spread evenly over the trials):")
    for seed, runs in sorted(by_seed.items()):
        allv = np.array([t["values"] for r in runs.values() for t in r["trials"] if t["state"] == "COMPLETE"])
        F = _F(allv, next(iter(runs.values())).get("task", "digits"))
        curves = {m: hv_curve_total_cpu(r, F.min(0), F.max(0)) for m, r in runs.items()}
        T = min(float(c[-1]) for c, _, _ in curves.values())
        parts = []
        for m in methods:
            if m in curves:
                c, h, exact = curves[m]
                k = np.flatnonzero(c <= T + 1e-9)
                parts.append(f"{m} {h[k[-1]] if len(k) else 0.0:.4f}{'' if exact else '*'}")
        print(f"  seed {seed} at {T:.1f} CPU-s: " + ", ".join(parts))


def _first_share(c: np.ndarray, h: np.ndarray, target: float, total: float) -> float:
    """The share of ``total`` at which the HV curve ``(c, h)`` first reaches ``target`` (``inf``: never)."""
    hit = np.flatnonzero(h >= target - 1e-12)
    return float(c[hit[0]] / total) if len(hit) else float("inf")


def summarise(rows: list[dict], methods) -> None:
    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        if r.get("kind") == "run":
            by_seed.setdefault(r["seed"], {})[r["method"]] = r
    table = {m: [] for m in methods}
    reach, checks, near, reach_total = [], [], [], []
    print(f"\n{'seed':>4} " + " ".join(f"{m:>8}" for m in methods) + "   ht_es reach share   pruned/complete")
    for seed, runs in sorted(by_seed.items()):
        allv = np.array([t["values"] for r in runs.values() for t in r["trials"] if t["state"] == "COMPLETE"])
        F = _F(allv, next(iter(runs.values())).get("task", "digits"))
        lo, hi = F.min(0), F.max(0)
        curves = {m: hv_curve(r, lo, hi) for m, r in runs.items()}
        finals = {m: float(curves[m][1][-1]) for m in runs}  # at the end of the budget
        for m in methods:
            if m in finals:
                table[m].append(finals[m])
        share = float("nan")
        if "ht" in curves and "ht_es" in curves:
            c_ht, h_ht = curves["ht"]
            target = h_ht[-1]
            t_ht = c_ht[-1]
            share = _first_share(*curves["ht_es"], target, t_ht)
            reach.append(share)
            # the same on the total CPU (trials + tuner): ht_es's process CPU when it first reaches the
            # target, over ht's process CPU at its end
            c_es, h_es, _ = hv_curve_total_cpu(runs["ht_es"], lo, hi)
            c_ht_total = hv_curve_total_cpu(runs["ht"], lo, hi)[0]
            reach_total.append(_first_share(c_es, h_es, target, float(c_ht_total[-1])))
            # for information (not the acceptance): where each first comes within 1% of ht's final HV,
            # a tolerance of the size of the timing noise between re-runs of one configuration
            near.append(
                tuple(_first_share(c, h, 0.99 * target, t_ht) for c, h in (curves["ht_es"], curves["ht"]))
            )
        es = runs.get("ht_es")
        counts = ""
        if es:
            n_p = sum(t["state"] == "PRUNED" for t in es["trials"])
            n_c = sum(t["state"] == "COMPLETE" for t in es["trials"])
            counts = f"{n_p}/{n_c}"
        print(
            f"{seed:>4} "
            + " ".join(f"{finals.get(m, float('nan')):8.4f}" for m in methods)
            + f"   {share:17.3f}   {counts:>15}"
        )
    for r in rows:
        if r.get("kind") == "rerun":
            checks.append(r)
    print(
        "median "
        + " ".join(f"{np.median(v) if v else float('nan'):8.4f}" for v in table.values())
        + f"   {np.median(reach) if reach else float('nan'):17.3f}"
    )
    if reach:
        print(
            f"ht_es reaches ht's final HV at {[round(x, 3) for x in reach]} of ht's trial CPU (acceptance <= 0.60)"
        )
        print(f"  and at {[round(x, 3) for x in reach_total]} of ht's total CPU (trials + tuner)")
        print(
            "within 1% of ht's final HV (information, not the acceptance), ht_es / ht: "
            + ", ".join(f"{a:.3f} / {b:.3f}" for a, b in near)
        )
    for c in checks:
        print(
            f"seed {c['seed']}: re-ran {c['rerun']} of {c['n_pruned']} pruned trials (best partial values) to "
            f"completion; {c['entered']} would have entered the final front"
        )
    for r in rows:
        if r.get("kind") == "run":
            print(
                f"  {r['method']:>6} seed {r['seed']}: {len(r['trials'])} trials, trial CPU {r['trial_cpu']:.1f} s, "
                f"tuner CPU outside trials {r['tuner_cpu_outside_trials']:.1f} s, wall {r['wall']:.0f} s"
            )


def _size(args) -> str:
    """The task size a run was made at (rows record it; one results file holds one size)."""
    return (
        f"train_windows={args.train_windows}" if args.task == "etth1" else f"digits_size={args.digits_size}"
    )


def _row_size(row: dict) -> str:
    if "size" in row:
        return row["size"]
    return "train_windows=384" if row.get("task") == "etth1" else "digits_size=small"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + EXTRA_METHODS)
    ap.add_argument(
        "--task",
        default="digits",
        choices=sorted(TASKS),
        help="digits: LeNet-5 on digits (val_acc, time); etth1: iTransformer on ETTh1 (val_mse, time)",
    )
    ap.add_argument(
        "--budget", type=float, default=None, help="summed trial CPU seconds per run (digits 20, etth1 15)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (digits 6, etth1 4)")
    ap.add_argument(
        "--train-windows",
        type=int,
        default=ETTH1_TRAIN_WINDOWS,
        help=f"etth1: training windows ({ETTH1_TRAIN_WINDOWS}; 0: the whole training split, 8,449)",
    )
    ap.add_argument(
        "--digits-size",
        default=DIGITS_SIZE,
        choices=sorted(DIGITS_SIZES),
        help="digits: small (16x16, 600 training images) or full (32x32, all 1,347 outside the validation set)",
    )
    ap.add_argument(
        "--time-unit",
        default="cpu",
        choices=TIME_UNITS,
        help="cpu: trial CPU seconds; ref: CPU seconds scaled by a reference kernel timed at the start of "
        "every trial and after every epoch (load-independent; REF_SCALE seconds per kernel)",
    )
    ap.add_argument("--n-init", type=int, default=4)
    ap.add_argument("--rerun", type=int, default=3, help="pruned trials re-run to completion per seed")
    ap.add_argument("--out", default="runs/hypertuner_budget.jsonl")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--plot", default=None, help="write the HV-over-CPU figure (PNG) here")
    ap.add_argument(
        "--pruner",
        default=None,
        help=f"ht_es's pruner as JSON (default {json.dumps(PRUNER)}; the first stop used {json.dumps(PRUNER_H16B)})",
    )
    ap.add_argument(
        "--cross-runs",
        action="store_true",
        help="also print how often ht_es reaches another ht run's final HV at <= 0.60 of its budget, over "
        "every ordered pair of runs in --out, beside the same for ht against ht (the null)",
    )
    ap.add_argument(
        "--oracle",
        type=int,
        nargs="*",
        default=None,
        help="also print the oracle-pruner bound of the ht runs, stopping non-front trials at these epochs "
        "(and, with --pruner, the ht runs replayed through that pruner)",
    )
    args = ap.parse_args()
    if args.budget is None:
        args.budget = TASKS[args.task]["budget"]
    if args.epochs is None:
        args.epochs = TASKS[args.task]["epochs"]
    set_etth1_train_windows(args.train_windows)
    set_digits_size(args.digits_size)
    set_time_unit(args.time_unit, args.task)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rows = [r for r in rows if r.get("task", "digits") == args.task]
    sizes = {_row_size(r) for r in rows if r.get("kind") == "run"} - {_size(args)}
    if sizes:
        raise SystemExit(
            f"{out} holds {args.task} runs of size {sorted(sizes)}, not {_size(args)!r}: use another --out "
            "(runs of two task sizes are not comparable)."
        )
    units = {r.get("time_unit", "cpu") for r in rows if r.get("kind") == "run"} - {args.time_unit}
    if units:
        raise SystemExit(
            f"{out} holds {args.task} runs timed in {sorted(units)}, not --time-unit {args.time_unit!r}: use "
            "another --out (their time objectives and budgets are on different axes)."
        )
    if not args.summary_only:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="hypertuner_budget_"))
        defaults = {k: v["default"] for k, v in TASKS[args.task]["space"].items()}
        _train_fn(args.task)(defaults, None, epochs=1)  # one-time costs (data, first autograd) off the axis
        for seed in args.seeds:
            for method in args.methods:
                if any(r.get("kind") == "run" and r["seed"] == seed and r["method"] == method for r in rows):
                    continue
                pr = json.loads(args.pruner) if args.pruner else None
                r = run_method(method, seed, args.budget, args.epochs, work, args.n_init, pr, args.task)
                r["kind"] = "run"
                r["epochs"] = args.epochs
                r["size"] = _size(args)
                r["time_unit"] = args.time_unit
                rows.append(r)
                with open(out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"done {method} seed {seed}: {len(r['trials'])} trials, wall {r['wall']:.0f} s",
                    flush=True,
                )
            es = [r for r in rows if r.get("kind") == "run" and r["seed"] == seed and r["method"] == "ht_es"]
            have = any(r.get("kind") == "rerun" and r["seed"] == seed for r in rows)
            if es and args.rerun > 0 and not have:
                c = rerun_check(es[0], args.rerun, args.epochs, seed)
                c.update(kind="rerun", seed=seed, task=args.task)
                rows.append(c)
                with open(out, "a") as f:
                    f.write(json.dumps(c) + "\n")
    summarise(rows, [m for m in METHODS + EXTRA_METHODS if m in args.methods])
    summarise_total_cpu(rows, [m for m in METHODS + EXTRA_METHODS if m in args.methods])
    if args.cross_runs:
        summarise_cross_runs(rows)
    if args.oracle:
        summarise_oracle(rows, args.oracle, replay=json.loads(args.pruner) if args.pruner else None)
    if args.plot:
        plot(rows, [m for m in METHODS + EXTRA_METHODS if m in args.methods], args.plot)


if __name__ == "__main__":
    main()
