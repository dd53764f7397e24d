"""ADUMBO vs its ablations and peers on BoTorch's multi-objective test problems.

Equal budget for every method and seed: the same 10 scrambled-Sobol points first (enqueued into the
Optuna studies too), then 30 suggestions. Hypervolume uses BoTorch's reference point and max HV only.
Prints median HV / max HV per problem and method, the ratio to the best peer (best non-ADUMBO method)
and the median seconds per model-based suggestion. Results are appended to a JSONL file, so an
interrupted run resumes (``--resume``) and partial results can be summarised (``--summary-only``).

Reproduce (1 thread per job; ``--workers`` parallel jobs)::

    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --seeds 5 --workers 2 --out runs/bench_hypertuner.jsonl
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --methods qnehvi --seeds 5   # opt-in, slow
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --energy    # EnergyMeter vs CodeCarbon on one digits run
    # batches of 4 and 4 asynchronous workers (4 simulated parallel workers) against sequential ADUMBO
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --problems BraninCurrin ZDT1 DTLZ2 \\
        --methods adumbo adumbo_q4 adumbo_a4 --seeds 5 --out runs/bench_hypertuner_batch.jsonl
    # BoTorch's qLogNEHVI sequential and in joint batches of 4 (each batch compared with its own sequential)
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --problems DTLZ2 --methods qnehvi qnehvi_q4 --seeds 13 \\
        --out runs/bench_qnehvi_batch.jsonl
    # a batch rule other than the default: the method name's suffix ":rule" (ADUMBO's batch_rule)
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --problems DTLZ2 \\
        --methods adumbo adumbo_q4:lower_bound adumbo_a4:lower_bound --seeds 13 --out runs/bench_rule.jsonl
    # suggestion cost, ADUMBO beside GPSampler in one process (CPU-s per ask at 40-45 observations)
    OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --speed --seeds 5 --out runs/bench_hypertuner_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# GMM (2-D): its Pareto set lies strictly inside the box (x in [0.4, 0.85], y in [0.1, 0.8]);
# ZDT3 (6-D): a disconnected front (five pieces)
PROBLEMS = ("BraninCurrin", "ZDT1", "ZDT2", "DTLZ2", "GMM", "ZDT3")
OURS = ("adumbo", "adumbo_w1", "adumbo_w0")
# "adumbo_q4": ADUMBO asked for batches of 4 (4 simulated parallel workers, joint kriging-believer batch)
# after the same 10 initial points, until the same 40 evaluations
# "adumbo_a4": 4 asynchronous workers (as HyperTunerSampler runs them): each finished evaluation is told
# and its worker asks one point with the other 3 running points pending (equal durations: first in,
# first out)
BATCH_METHODS = ("adumbo_q4", "adumbo_a4")
# "adumbo_ref": ADUMBO told BoTorch's reference point (as qLogNEHVI always is); the default ADUMBO and
# Optuna's GPSampler infer one from the data.
PEERS = ("optuna_gp", "tpe", "nsga2", "random")
DEFAULT_METHODS = OURS + PEERS


def make_problem(name: str):
    from botorch.test_functions import multi_objective as mo

    if name == "BraninCurrin":
        return mo.BraninCurrin()
    if name in ("ZDT1", "ZDT2", "ZDT3"):
        return getattr(mo, name)(dim=6)
    if name == "DTLZ2":
        return mo.DTLZ2(dim=6, num_objectives=2)
    if name == "GMM":
        return mo.GMM(num_objectives=2)  # minimisation of negated Gaussian mixtures, peaks inside the box
    raise ValueError(f"unknown problem {name!r}; choose from {PROBLEMS}")


def max_hv(prob) -> float:
    """BoTorch's ``max_hv``; for GMM (none given) the hypervolume of the Pareto points of a 1001 x 1001 grid
    (a lower bound: a method can slightly exceed 1.0 on it)."""
    try:
        return float(prob.max_hv)
    except NotImplementedError:
        import torch

        from lightning_addons.tuner._pareto import hypervolume, pareto_mask

        g = np.linspace(0.0, 1.0, 1001)
        U = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        lo, hi = prob.bounds[0].numpy(), prob.bounds[1].numpy()
        with torch.no_grad():
            Y = prob(torch.as_tensor(lo + U * (hi - lo))).numpy()
        return hypervolume(-Y[pareto_mask(-Y)], -prob.ref_point.numpy())


def run_one(problem_name: str, method: str, seed: int, n_init: int = 10, n_steps: int = 30) -> dict:
    import torch

    label = method
    method, _, batch_rule = method.partition(":")  # "adumbo_q4:thompson": ADUMBO(batch_rule="thompson")

    torch.set_num_threads(1)
    from lightning_addons.tuner._pareto import hypervolume
    from lightning_addons.tuner.optimizers import _sobol, make_optimizer

    prob = make_problem(problem_name)
    d, m = prob.dim, prob.num_objectives
    lo, hi = prob.bounds[0].numpy(), prob.bounds[1].numpy()
    ref_min = prob.ref_point.numpy()  # minimisation convention (negate=False)
    hv_max = max_hv(prob)

    def f(u: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(lo + u * (hi - lo), dtype=torch.float64)
        with torch.no_grad():
            return prob(x.reshape(-1, d)).numpy()

    init = _sobol(n_init, d, seed)
    X, Y, ask_times, ask_cpu, batch_dist = [], [], [], [], []
    qnehvi = _is_qnehvi(method)
    if method.startswith("adumbo") or method == "random" or qnehvi:
        from lightning_addons.tuner.optimizers import _normalised_distance

        q = int(method.split("_q")[1]) if "_q" in method else 1
        n_async = int(method.split("_a")[1]) if "_a" in method and method.split("_a")[1].isdigit() else 0
        kw = {"n_init": n_init, "initial_points": init} if method.startswith("adumbo") else {}
        if method == "adumbo_ref":
            kw["ref_point"] = ref_min.tolist()
        if batch_rule:
            kw["batch_rule"] = batch_rule
        if qnehvi:
            kw = {"n_init": n_init, "ref_point": ref_min.tolist()}
        base_name = method.replace("_ref", "").split("_q")[0]
        base_name = base_name.split("_a")[0] if n_async else base_name
        opt = make_optimizer(base_name, d, ["minimize"] * m, seed=seed, **kw)
        if method == "random" or qnehvi:
            opt.tell(init, f(init))
            X += list(init)
            Y += list(f(init))
        running: list[np.ndarray] = []  # asynchronous workers: suggested, not yet evaluated
        while n_async and len(X) < n_init + n_steps:
            if len(X) < n_init:
                x = opt.ask(1)
                y = f(x)
                opt.tell(x, y)
                X += list(x)
                Y += list(y)
                continue
            if len(running) < n_async and len(X) + len(running) < n_init + n_steps:
                pend = np.asarray(running) if running else None
                t0, c0 = time.perf_counter(), time.process_time()
                x = opt.ask(1, pending=pend)
                ask_times.append(time.perf_counter() - t0)
                ask_cpu.append((len(X), time.process_time() - c0))
                if running:
                    batch_dist.append(float(_normalised_distance(x, np.asarray(running))[0]))
                running.append(x[0])
                continue
            x = np.asarray(running.pop(0))[None]  # the oldest running point finishes first
            y = f(x)
            opt.tell(x, y)
            X += list(x)
            Y += list(y)
        while len(X) < n_init + n_steps:
            # the initial design one point at a time, then batches of q (the last one cut to the budget)
            k = 1 if len(X) < n_init else min(q, n_init + n_steps - len(X))
            t0, c0 = time.perf_counter(), time.process_time()
            x = opt.ask(k)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            y = f(x)
            opt.tell(x, y)
            if len(X) >= n_init:
                ask_times.append(dt / k)
                ask_cpu.append((len(X), dc / k))
                if k > 1:
                    batch_dist.append(
                        float(
                            min(_normalised_distance(x[i : i + 1], np.delete(x, i, 0))[0] for i in range(k))
                        )
                    )
            X += list(x)
            Y += list(y)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if method == "optuna_gp":
            sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_init)
        elif method == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_init)
        elif method == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=n_init)
        else:
            raise ValueError(f"unknown method {method!r}")
        study = optuna.create_study(directions=["minimize"] * m, sampler=sampler)
        for u in init:
            study.enqueue_trial({f"x{i}": float(u[i]) for i in range(d)})
        for k in range(n_init + n_steps):
            t0, c0 = time.perf_counter(), time.process_time()
            trial = study.ask()
            u = np.array([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(d)])
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            y = f(u[None])[0]
            study.tell(trial, y.tolist())
            if k >= n_init:
                ask_times.append(dt)
                ask_cpu.append((k, dc))
            X.append(u)
            Y.append(y)
    Y = np.asarray(Y)
    hv_curve = [hypervolume(-Y[: k + 1], -ref_min) / hv_max for k in range(len(Y))]
    return {
        "problem": problem_name,
        "method": label,
        "seed": seed,
        "hv_ratio": hv_curve[-1],
        "hv_curve": hv_curve,
        "sec_per_suggestion": float(np.median(ask_times)) if ask_times else float("nan"),
        # CPU seconds (time.process_time) per suggestion, as (observations before the ask, seconds)
        "cpu_per_suggestion": ask_cpu,
        "min_batch_distance": min(batch_dist) if batch_dist else None,
        "n_evals": len(Y),
    }


def speed_one(problem_name: str, method: str, seed: int, n_obs: int = 40, n_asks: int = 6) -> dict:
    """CPU seconds (``time.process_time``, one thread) of ``n_asks`` suggestions after ``n_obs`` scrambled-Sobol
    observations, each suggestion evaluated and told before the next (so ``n_obs`` .. ``n_obs + n_asks - 1``
    observations). Both ADUMBO and GPSampler start cold (no fit from an earlier step) at the first ask and
    warm-start from their previous fit afterwards, so the first ask is reported apart."""
    import torch

    torch.set_num_threads(1)
    from lightning_addons.tuner.optimizers import _sobol, make_optimizer

    prob = make_problem(problem_name)
    d, m = prob.dim, prob.num_objectives
    lo, hi = prob.bounds[0].numpy(), prob.bounds[1].numpy()

    def f(u: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return prob(torch.as_tensor(lo + u * (hi - lo)).reshape(-1, d)).numpy()

    X0 = _sobol(n_obs, d, seed)
    Y0 = f(X0)
    cpu = []
    if method == "adumbo":
        opt = make_optimizer("adumbo", d, ["minimize"] * m, seed=seed, n_init=10)
        opt.tell(X0, Y0)
        opt.n_asked = n_obs
        for _ in range(n_asks):
            c0 = time.process_time()
            x = opt.ask(1)
            cpu.append(time.process_time() - c0)
            opt.tell(x, f(x))
    elif method == "optuna_gp":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dist = {f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(d)}
        study = optuna.create_study(
            directions=["minimize"] * m, sampler=optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
        )
        for u, y in zip(X0, Y0):
            study.add_trial(
                optuna.trial.create_trial(
                    params={f"x{i}": float(u[i]) for i in range(d)}, distributions=dist, values=y.tolist()
                )
            )
        for _ in range(n_asks):
            c0 = time.process_time()
            trial = study.ask()
            u = np.array([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(d)])
            cpu.append(time.process_time() - c0)
            study.tell(trial, f(u[None])[0].tolist())
    else:
        raise ValueError(f"--speed compares 'adumbo' and 'optuna_gp', got {method!r}")
    return {"problem": problem_name, "method": method, "seed": seed, "n_obs": n_obs, "cpu": cpu}


def summarise_speed(rows: list[dict]) -> str:
    """Median CPU seconds per suggestion: all asks, the first (cold) ask, the later (warm-started) asks."""
    lines = [
        "| problem | method | seeds | observations | median CPU-s/ask (all) | first ask (cold) | later asks "
        "| ratio to GPSampler (all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in dict.fromkeys(r["problem"] for r in rows):
        med = {}
        for mth in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["problem"] == p and r["method"] == mth]
            if sel:
                n0 = sel[0]["n_obs"]
                med[mth] = (
                    len(sel),
                    f"{n0}-{n0 + len(sel[0]['cpu']) - 1}",
                    float(np.median([c for r in sel for c in r["cpu"]])),
                    float(np.median([r["cpu"][0] for r in sel])),
                    float(np.median([c for r in sel for c in r["cpu"][1:]])),
                )
        gp = med.get("optuna_gp", (0, "", float("nan")))[2]
        for mth, (n, obs, c, c0, c1) in med.items():
            lines.append(f"| {p} | {mth} | {n} | {obs} | {c:.3f} | {c0:.3f} | {c1:.3f} | {c / gp:.2f} |")
    return "\n".join(lines)


def _job(args):
    p, mth, s, n_init, n_steps = args
    try:
        return run_one(p, mth, s, n_init, n_steps)
    except Exception as err:  # noqa: BLE001 - record and go on
        return {"problem": p, "method": mth, "seed": s, "error": repr(err)}


def summarise(rows: list[dict], methods: list[str]) -> str:
    rows = [r for r in rows if "hv_ratio" in r]
    lines = []
    header = (
        "| problem | method | seeds | median HV/max | ratio to best peer (GPSampler/TPE/NSGA-II/random) "
        "| ratio to GPSampler | s/suggestion (median, wall) | CPU-s/suggestion (median) |"
    )
    lines += [header, "|---|---|---|---|---|---|---|---|"]
    problems = [p for p in dict.fromkeys([*PROBLEMS, *[r["problem"] for r in rows]])]
    for p in problems:
        med = {}
        for mth in methods:
            sel = [r for r in rows if r["problem"] == p and r["method"] == mth]
            if sel:
                cpu = [c for r in sel for _, c in r.get("cpu_per_suggestion", [])]
                med[mth] = (
                    float(np.median([r["hv_ratio"] for r in sel])),
                    len(sel),
                    float(np.median([r["sec_per_suggestion"] for r in sel])),
                    float(np.median(cpu)) if cpu else float("nan"),
                )
        peers = [med[m][0] for m in med if not m.startswith("adumbo") and not _is_qnehvi(m)]
        best_peer = max(peers) if peers else float("nan")
        gp = med.get("optuna_gp", (float("nan"),))[0]
        for mth, (v, n, sec, cpu) in med.items():
            r_peer = v / best_peer if best_peer > 0 else float("nan")
            r_gp = v / gp if gp > 0 else float("nan")
            lines.append(
                f"| {p} | {mth} | {n} | {v:.3f} | {r_peer:.3f} | {r_gp:.3f} | {sec:.3f} | {cpu:.3f} |"
            )
    return "\n".join(lines)


def _is_batch(method: str) -> bool:
    """Batch (``*_qN``) or asynchronous-worker (``*_aN``) method."""
    return "_q" in method or method.partition(":")[0] in BATCH_METHODS


def _is_qnehvi(method: str) -> bool:
    """BoTorch's qLogNEHVI, sequential (``qnehvi``) or in joint batches of N (``qnehvi_qN``)."""
    return method.split("_q")[0] == "qnehvi"


def _sequential_of(method: str) -> str:
    """The sequential method a batch method is compared with: ``qnehvi_q4`` -> ``qnehvi``, every other batch
    method (``adumbo_q4``, ``adumbo_a4:lower_bound``, ...) -> ``adumbo``.

    Examples:
        >>> _sequential_of("qnehvi_q4"), _sequential_of("adumbo_a4:lower_bound")
        ('qnehvi', 'adumbo')
    """
    return "qnehvi" if _is_qnehvi(method) else "adumbo"


def summarise_batch(rows: list[dict]) -> str:
    """Batch methods (``*_qN``, ``*_aN``) against their sequential method (see ``_sequential_of``) on the
    same problems and seeds."""
    rows = [r for r in rows if "hv_ratio" in r]
    lines = [
        "| problem | method | seeds | median HV/max | sequential median HV/max | difference "
        "| min intra-batch distance (normalised) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in dict.fromkeys(r["problem"] for r in rows):
        for mth in dict.fromkeys(r["method"] for r in rows if _is_batch(r["method"])):
            seq = [r["hv_ratio"] for r in rows if r["problem"] == p and r["method"] == _sequential_of(mth)]
            sel = [r for r in rows if r["problem"] == p and r["method"] == mth]
            if not sel or not seq:
                continue
            hv, hv_seq = float(np.median([r["hv_ratio"] for r in sel])), float(np.median(seq))
            dmin = min(r["min_batch_distance"] for r in sel if r.get("min_batch_distance") is not None)
            lines.append(
                f"| {p} | {mth} | {len(sel)} | {hv:.3f} | {hv_seq:.3f} | {hv - hv_seq:+.3f} | {dmin:.3g} |"
            )
    return "\n".join(lines)


def energy_comparison() -> None:
    """Train the digits LeNet once with EnergyMeter and CodeCarbon's offline tracker side by side."""
    import lightning.pytorch as pl

    from lightning_addons.callbacks import EnergyMeter
    from lightning_addons.datamodules import DigitsDataModule
    from lightning_addons.modules import ImageClassifier
    from lightning_addons.modules.nn import LeNet5

    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        print("codecarbon not installed: pip install 'lightning-addons[tune]'")
        return
    pl.seed_everything(0)
    meter = EnergyMeter()
    tracker = OfflineEmissionsTracker(
        country_iso_code="DEU", log_level="error", save_to_file=False, measure_power_secs=1
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[meter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tracker.start()
    t0 = time.perf_counter()
    trainer.fit(ImageClassifier(LeNet5(), lr=3e-3), DigitsDataModule(resize=32))
    wall = time.perf_counter() - t0
    tracker.stop()
    cc = tracker.final_emissions_data
    cc_cpu_j = float(cc.cpu_energy) * 3.6e6
    cc_total_j = float(cc.energy_consumed) * 3.6e6
    print(f"wall {wall:.1f} s")
    print(f"EnergyMeter: {meter.energy_joules:.1f} J (source={meter.source})")
    print(
        f"CodeCarbon : cpu {cc_cpu_j:.1f} J, total (cpu+ram+gpu) {cc_total_j:.1f} J, cpu model {cc.cpu_model!r}"
    )
    print(f"ratio EnergyMeter / CodeCarbon cpu: {meter.energy_joules / max(cc_cpu_j, 1e-9):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--seed-start", type=int, default=0, help="first seed (e.g. 100 for tuning seeds kept off the table)"
    )
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--n-steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="runs/bench_hypertuner.jsonl")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="further JSONL result files to include in the summary"
    )
    ap.add_argument("--resume", action="store_true", help="skip (problem, method, seed) already in --out")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--energy", action="store_true", help="EnergyMeter vs CodeCarbon on one digits run")
    ap.add_argument(
        "--speed",
        action="store_true",
        help="suggestion cost: ADUMBO and GPSampler in this one process, CPU-s per ask at 40-45 observations "
        "(defaults: ZDT1, DTLZ2 and ZDT3, 6-D, 2 objectives)",
    )
    args = ap.parse_args(argv)
    if args.energy:
        energy_comparison()
        return
    if args.speed:
        problems = args.problems if args.problems != list(PROBLEMS) else ["ZDT1", "DTLZ2", "ZDT3"]
        methods = args.methods if args.methods != list(DEFAULT_METHODS) else ["adumbo", "optuna_gp"]
        rows = []
        for s in range(args.seed_start, args.seed_start + args.seeds):
            for p in problems:
                for mth in methods:  # interleaved, one process, one thread
                    rows.append(speed_one(p, mth, s))
                    print(
                        f"{p} {mth} seed={s} CPU-s per ask {np.round(rows[-1]['cpu'], 3).tolist()}",
                        flush=True,
                    )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(summarise_speed(rows))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    extra = [
        json.loads(line) for f in args.extra if Path(f).exists() for line in Path(f).read_text().splitlines()
    ]
    if not args.summary_only:
        done = (
            {(r["problem"], r["method"], r["seed"]) for r in rows if "hv_ratio" in r}
            if args.resume
            else set()
        )
        # seeds outermost so that an interrupted run still covers every (problem, method)
        jobs = [
            (p, m, s, args.n_init, args.n_steps)
            for s in range(args.seed_start, args.seed_start + args.seeds)
            for p in args.problems
            for m in args.methods
            if (p, m, s) not in done
        ]
        t0 = time.time()
        if args.workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(args.workers) as pool:
                for r in pool.imap_unordered(_job, jobs):
                    rows.append(r)
                    with out.open("a") as fh:
                        fh.write(json.dumps(r) + "\n")
                    print(
                        f"[{time.time() - t0:7.0f}s] {r['problem']} {r['method']} seed={r['seed']} "
                        f"HV/max={r.get('hv_ratio', r.get('error'))}",
                        flush=True,
                    )
        else:
            for j in jobs:
                r = _job(j)
                rows.append(r)
                with out.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(
                    f"[{time.time() - t0:7.0f}s] {r['problem']} {r['method']} seed={r['seed']} "
                    f"HV/max={r.get('hv_ratio', r.get('error'))}",
                    flush=True,
                )
    methods = list(dict.fromkeys([*args.methods, *[r["method"] for r in rows + extra]]))
    print(summarise([r for r in rows + extra if not _is_batch(r.get("method", ""))], methods))
    if any(_is_batch(r.get("method", "")) for r in rows + extra):
        print()
        print(summarise_batch(rows + extra))
    print(
        f"\nreproduce: OMP_NUM_THREADS=1 python benchmarks/hypertuner.py --seeds {args.seeds} "
        f"--seed-start {args.seed_start} "
        f"--workers {args.workers} --out {args.out}"
    )


if __name__ == "__main__":
    main()
