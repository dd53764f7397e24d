"""Which learning-curve predictor could early stopping use? Replays recorded ``ht`` runs of
``hypertuner_budget.py`` (runs with per-epoch curves) through one decision at a single rung with four
predictors of a trial's final quality, and prints, per run, the trials stopped, the front trials stopped,
the trial CPU saved and the share of the run's trial CPU at which the replay reaches its final
hypervolume (``inf`` when a front trial was stopped), beside the oracle bound of the same run:

- ``lin``: a least-squares line from the partial value to the final value (normal quantile, global spread);
- ``gp_partial``: a GP on the partial value alone;
- ``gp_config``: a GP on (unit-cube configuration, partial value);
- ``gp_config_curve``: a GP on (configuration, every partial value so far).

Cost (``time``) is always the line on the log scale. A trial stops when a complete trial's final vector
dominates the optimistic corner (``quantile`` on the good side of each objective). This is the offline
comparison behind ``LearningCurvePruner(model="gp")`` (docs/results/hypertuner_es_total_cpu.md); the
shipped rule differs (the line plus a GP correction of its residuals, at every step), and
``hypertuner_budget.py --oracle R --pruner JSON`` replays the shipped rules.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/hypertuner_curve_models.py runs/s14/etth1_e8.jsonl 3,4 lin,gp_config 0.9,0.95 1,2

(arguments: run file, seeds, predictors, quantiles, rung sets such as ``1`` or ``2`` or ``1+2``).
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hypertuner_budget as hb
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C
from threadpoolctl import threadpool_limits

from lightning_addons.tuner._pareto import dominates, nondominated_mask
from lightning_addons.tuner.space import SearchSpace

warnings.filterwarnings("ignore")


def space_of(task):
    return SearchSpace(hb.TASKS[task]["space"])


def to_max(vals, task):
    v = np.asarray(vals, float).reshape(-1, 2)
    q = v[:, 0] if task == "digits" else -np.log(v[:, 0])
    return np.column_stack([q, -np.log(v[:, 1])])


def gp_predict(Z, y, z0):
    d = Z.shape[1]
    k = C(1.0, (1e-3, 1e3)) * RBF(np.ones(d), (1e-2, 1e2)) + WhiteKernel(1e-2, (1e-6, 1e0))
    g = GaussianProcessRegressor(k, normalize_y=True, n_restarts_optimizer=1, random_state=0)
    with threadpool_limits(1):
        g.fit(Z, y)
        m, s = g.predict(z0[None], return_std=True)
    return float(m[0]), float(s[0])


def lin_predict(x, y, x0):
    n = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    b = ((x - xm) * (y - ym)).sum() / sxx if sxx > 1e-12 else 0.0
    r = y - ym - b * (x - xm)
    s2 = (r**2).sum() / max(n - 2, 1)
    lev = 1 + 1 / n + ((x0 - xm) ** 2 / sxx if sxx > 1e-12 else 0)
    return float(ym + b * (x0 - xm)), float(np.sqrt(s2 * lev))


def decide(mode, q, t_partial, done, task, sp, trial, step):
    # done: list of complete trials (dicts); returns prune bool
    P = to_max([d["curve"][step - 1][1:] for d in done], task)
    F = to_max([d["values"] for d in done], task)
    v = to_max(trial["curve"][step - 1][1:], task)[0]
    U = np.array([sp.to_unit(d["params"]) for d in done])
    u0 = sp.to_unit(trial["params"])
    zq = norm.ppf(q)
    corner = np.empty(2)
    # time (column 1): linear on log
    m, s = lin_predict(P[:, 1], F[:, 1], v[1])
    corner[1] = m + zq * s
    if mode == "lin":
        m, s = lin_predict(P[:, 0], F[:, 0], v[0])
    elif mode == "gp_partial":
        m, s = gp_predict(P[:, :1], F[:, 0], v[:1])
    elif mode == "gp_config":
        m, s = gp_predict(np.column_stack([U, P[:, 0]]), F[:, 0], np.r_[u0, v[0]])
    elif mode == "gp_config_curve":  # all partial quality values so far
        Pc = np.column_stack([to_max([d["curve"][k][1:] for d in done], task)[:, 0] for k in range(step)])
        vc = np.array([to_max(trial["curve"][k][1:], task)[0, 0] for k in range(step)])
        m, s = gp_predict(np.column_stack([U, Pc]), F[:, 0], np.r_[u0, vc])
    corner[0] = m + zq * s
    front = F[nondominated_mask(F)]
    return bool(dominates(front, corner[None]).any())


def replay(run, mode, q, steps, min_complete=5):
    task = run.get("task", "digits")
    sp = space_of(task)
    trs, on_front, last, total = hb._stream(run)
    done, costs, pruned = [], [], []
    for t in trs:
        stop = None
        for c in t["curve"][:-1]:
            step = int(c[0])
            if step not in steps:
                continue
            ok = [d for d in done if len(d["curve"]) >= step]
            if len(ok) < min_complete:
                continue
            if decide(mode, q, None, ok, task, sp, t, step):
                stop = c
                break
        if stop is None:
            done.append(t)
            costs.append(t["cpu"])
        else:
            pruned.append(t["number"])
            costs.append(stop[-1])
    fp = [t["number"] for t, f in zip(trs, on_front) if f and t["number"] in pruned]
    share = float(sum(costs[: last + 1]) / total) if not fp else float("inf")
    return dict(
        seed=run["seed"],
        pruned=len(pruned),
        n=len(trs),
        front_pruned=fp,
        saved=1 - sum(costs) / total,
        share=share,
    )


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    f = sys.argv[1]
    seeds = [int(s) for s in sys.argv[2].split(",")]
    modes = sys.argv[3].split(",")
    qs = [float(x) for x in sys.argv[4].split(",")]
    stepsets = [tuple(int(a) for a in s.split("+")) for s in sys.argv[5].split(",")]
    rows = [json.loads(line) for line in Path(f).read_text().splitlines()]
    runs = [r for r in rows if r.get("kind") == "run" and r["method"] == "ht" and r["seed"] in seeds]
    for r in runs:
        print(
            "seed",
            r["seed"],
            "oracle@1",
            round(hb.oracle_share(r, 1)["share"], 3),
            "oracle@2",
            round(hb.oracle_share(r, 2)["share"], 3),
            flush=True,
        )
    for mode in modes:
        for q in qs:
            for st in stepsets:
                out = [replay(r, mode, q, st) for r in runs]
                print(
                    f"{mode:16s} q{q} steps{st}: "
                    + " | ".join(
                        f"s{o['seed']} {o['pruned']}/{o['n']} fp{len(o['front_pruned'])} saved {o['saved']:.0%} share {o['share']:.2f}"
                        for o in out
                    ),
                    flush=True,
                )
