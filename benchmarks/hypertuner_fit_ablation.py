"""Ablations of ADUMBO's surrogate fit and candidate set on one problem (issue 16: ZDT1 after the speed rewrite).

Each variant changes one part of ADUMBO's step (sequential suggestions, the benchmark's budget: the same 10
scrambled-Sobol points, then 30 suggestions) and reports, per seed, HV/max, the front's two extremes and
the median CPU seconds per suggestion (``time.process_time``, one thread):

- ``current``: the shipped step (multi-output GP, hand-written MLL on a log scale, NumPy posterior).
- ``all_faces``: the candidate set also holds every Pareto-set point with each input moved onto 0 and
  onto 1 in turn (``2 dim`` points per front point).
- ``margin=M``: the candidate set also holds the Pareto-set points with their inputs within ``M`` of a
  bound moved onto it, one at a time and all at once (``margin=0.5``: every input onto its nearer bound).
- ``botorch_fit``: one ``SingleTaskGP`` per objective fitted by BoTorch's ``fit_gpytorch_mll`` (the fit
  before the rewrite), same NumPy posterior and candidates.
- ``indep_fit``: the hand-written fit, one model (one L-BFGS run) per objective instead of one batched run.
- ``raw_scale``: the hand-written fit on the raw scale (as BoTorch: bounded, not log-transformed).
- ``old_filter``: the pre-rewrite duplicate filter (max-norm 1e-6) instead of ``MIN_DISTANCE``.
- ``pool2x``: twice the Sobol pool (2048) and twice the NSGA-II generations (60).
ADUMBO keyword arguments go through ``--kw key=value``.

Reproduce::

    OMP_NUM_THREADS=1 python benchmarks/hypertuner_fit_ablation.py --problem ZDT1 --seeds 1 2 \\
        --variants current botorch_fit indep_fit raw_scale old_filter all_faces margin=0.5 --out runs/h16h_ablation.jsonl
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402


def _variant_class(variant: str):
    """An ADUMBO subclass with one part of the step replaced (see the module docstring)."""
    from lightning_addons.tuner import optimizers as O

    class Variant(O.ADUMBO):
        def _fit(self, X, Y, Yvar=None):
            if variant == "botorch_fit":
                models = O.fit_independent_gps(X, Y, seed=self.seed + self.n_asked)
                return O._Posterior.from_models(models, X)
            if variant == "indep_fit":
                posts = []
                for j in range(Y.shape[1]):
                    models, _ = O.fit_gps(X, Y[:, j : j + 1], seed=self.seed + self.n_asked)
                    posts.append(models[0])
                return O._Posterior.from_models(posts, X)
            return super()._fit(X, Y, Yvar)

        def _candidates(self, models, rng, front_X):
            C = super()._candidates(models, rng, front_X)
            if variant == "all_faces" and len(front_X):
                # every input of every front point onto both faces, one at a time
                P = np.repeat(np.asarray(front_X, float)[None], 2 * self.dim, axis=0)
                for i in range(self.dim):
                    P[i, :, i] = 0.0
                    P[self.dim + i, :, i] = 1.0
                C = np.vstack([C, self._snap(P.reshape(-1, self.dim))])
            elif variant.startswith("margin=") and len(front_X):
                # inputs within M of a bound onto it: all at once, and one at a time
                margin = float(variant.split("=")[1])
                F = np.asarray(front_X, float)
                lo, hi = F < margin, F > 1.0 - margin
                out = [np.where(lo, 0.0, np.where(hi, 1.0, F))[(lo | hi).any(1)]]
                for i in range(self.dim):
                    for near, v in ((lo, 0.0), (hi, 1.0)):
                        P = F[near[:, i]].copy()
                        P[:, i] = v
                        out.append(P)
                C = np.vstack([C, self._snap(np.vstack(out))])
            return C

    return Variant


def run(
    problem_name: str, variant: str, seed: int, kwargs: dict, n_init: int = 10, n_steps: int = 30
) -> dict:
    import torch

    torch.set_num_threads(1)
    from hypertuner import make_problem, max_hv

    from lightning_addons.tuner import optimizers as O
    from lightning_addons.tuner._pareto import hypervolume, pareto_mask

    prob = make_problem(problem_name)
    d, m = prob.dim, prob.num_objectives
    lo, hi = prob.bounds[0].numpy(), prob.bounds[1].numpy()
    ref_min = prob.ref_point.numpy()
    hv_max = max_hv(prob)

    def f(u):
        with torch.no_grad():
            return prob(torch.as_tensor(lo + u * (hi - lo), dtype=torch.float64).reshape(-1, d)).numpy()

    saved = {}
    if variant == "raw_scale":  # no log transform of the positive parameters (BoTorch's parametrisation)
        orig_fit_mll = O._fit_mll

        def fit_raw(gp, X, maxiter=200, ftol=1e-9):
            from scipy.optimize import minimize

            loss = O._mll_loss(gp, X)
            params = [p for _, p in gp.named_parameters()]
            cons = dict(gp.named_constraints())
            bounds = []
            for name, p in gp.named_parameters():
                c = cons.get(f"{name}_constraint")
                lo_ = float(c.lower_bound.min()) if c is not None and not c.enforced else None
                bounds += [(lo_, None)] * p.numel()
            x0 = torch.cat([p.detach().reshape(-1) for p in params]).numpy()
            x0 = np.maximum(x0, [b[0] if b[0] is not None else -np.inf for b in bounds])

            def fun(x):
                z = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
                val = loss(z)
                (g,) = torch.autograd.grad(val, z)
                return val.item(), g.numpy()

            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter})
            x = res.x if np.isfinite(res.fun) and res.fun <= fun(x0)[0] else x0
            with torch.no_grad():
                for p, v in zip(params, torch.split(torch.as_tensor(x), [p.numel() for p in params])):
                    p.copy_(v.reshape(p.shape))

        O._fit_mll = fit_raw
        saved["fit"] = orig_fit_mll
    if variant == "old_filter":
        saved["md"] = O.MIN_DISTANCE
        saved["nd"] = O._normalised_distance
        O._normalised_distance = lambda A, B: (
            np.full(len(A), np.inf) if not len(B) else np.abs(A[:, None, :] - B[None]).max(-1).min(1)
        )
        O.MIN_DISTANCE = 1e-6
    kw = dict(kwargs)
    if variant == "pool2x":
        kw.update(pool_size=2048, nsga2_gens=60)
    try:
        init = O._sobol(n_init, d, seed)
        opt = _variant_class(variant)(
            d, ["minimize"] * m, seed=seed, n_init=n_init, initial_points=init, **kw
        )
        X, Y, cpu = [], [], []
        while len(X) < n_init + n_steps:
            c0 = time.process_time()
            x = opt.ask(1)
            if len(X) >= n_init:
                cpu.append(time.process_time() - c0)
            y = f(x)
            opt.tell(x, y)
            X += list(x)
            Y += list(y)
    finally:
        if "fit" in saved:
            O._fit_mll = saved["fit"]
        if "md" in saved:
            O.MIN_DISTANCE, O._normalised_distance = saved["md"], saved["nd"]
    Y = np.asarray(Y)
    F = Y[pareto_mask(-Y)]
    return {
        "problem": problem_name,
        "variant": variant,
        "kwargs": kwargs,
        "seed": seed,
        "hv_ratio": hypervolume(-Y, -ref_min) / hv_max,
        "hv_curve": [hypervolume(-Y[: k + 1], -ref_min) / hv_max for k in range(len(Y))],
        "extreme_f1": F[np.argmin(F[:, 0])].tolist(),
        "extreme_f2": F[np.argmin(F[:, 1])].tolist(),
        "cpu_median": float(np.median(cpu)),
        "X": np.asarray(X).tolist(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="ZDT1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", default=["current"])
    ap.add_argument("--kw", nargs="*", default=[], help="ADUMBO keyword arguments as key=value (JSON values)")
    ap.add_argument("--out", default="runs/hypertuner_fit_ablation.jsonl")
    args = ap.parse_args(argv)
    kwargs = {}
    for item in args.kw:
        k, _, v = item.partition("=")
        try:
            kwargs[k] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k] = v
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for v in args.variants:
        for s in args.seeds:
            r = run(args.problem, v, s, kwargs)
            with out.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(
                f"{args.problem} {v} {kwargs or ''} seed={s} HV/max={r['hv_ratio']:.4f} "
                f"min-f1 point {np.round(r['extreme_f1'], 4).tolist()} min-f2 point "
                f"{np.round(r['extreme_f2'], 4).tolist()} CPU-s/ask {r['cpu_median']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
