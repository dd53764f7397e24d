"""Which deliberately broken NSGA-II variants the ZDT1 test of tests/tuner/test_adumbo_nsga2.py catches.

Each variant is a source-patched copy of ``lightning_addons.tuner._nsga2``; the real NSGA-II is the peer
(it must pass at every offset). Run from the repository root (about a minute per variant on one core):

    python benchmarks/nsga2_mutants.py [--offsets 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import lightning_addons.tuner._nsga2 as real

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tuner"))
import test_adumbo_nsga2 as T  # noqa: E402

MUTANTS = {
    "real NSGA-II (must pass)": None,
    "no crowding distance": (
        "out = np.zeros(n)\n    if n <= 2:\n        return np.full(n, np.inf)",
        "out = np.zeros(n)\n    if n <= 2 or True:\n        return np.zeros(n)",
    ),
    "survival keeps the worst ranks": ("np.lexsort((-crowd, rank))[:k]", "np.lexsort((-crowd, -rank))[:k]"),
    "no elitism (offspring replace parents)": (
        "R, FR = np.vstack([P, Q]), np.vstack([FP, FQ])",
        "R, FR = Q, FQ",
    ),
    "tournament picks the worse parent": (
        "parents = np.where(better, i, j)",
        "parents = np.where(better, j, i)",
    ),
    "no variation (copies of parents)": (
        "Q = _poly_mutation(np.vstack([c1, c2]), rng, eta_m, pm)",
        "Q = np.vstack([a, b])",
    ),
    "mutation only, no crossover": ("c1, c2 = _sbx(a, b, rng, eta_c, prob=0.9)", "c1, c2 = a, b"),
    "crowding distance of unsorted neighbours": (
        "out[order[1:-1]] += (f[2:] - f[:-2]) / span",
        "out[1:-1] += (F[2:, k] - F[:-2, k]) / span",
    ),
}


def variant(patch):
    if patch is None:
        return real.nsga2
    src = inspect.getsource(real)
    old, new = patch
    assert old in src, old
    namespace: dict = {}
    exec(compile(src.replace(old, new), "nsga2_mutant", "exec"), namespace)
    return namespace["nsga2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="offset 0 only")
    args = parser.parse_args()
    if args.quick:
        args.offsets = [0]
    print(f"python benchmarks/nsga2_mutants.py --offsets {' '.join(map(str, args.offsets))}")
    for name, patch in MUTANTS.items():
        T.nsga2 = variant(patch)
        verdicts, t0 = [], time.perf_counter()
        for offset in args.offsets:
            try:
                T.test_nsga2_returns_mutually_non_dominated_points_close_to_the_zdt1_front(offset)
                verdicts.append("pass")
            except AssertionError:
                verdicts.append("FAIL")
        caught = verdicts.count("FAIL")
        print(
            f"{name:45s} {' '.join(verdicts)}  caught at {caught}/{len(verdicts)} offsets "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
