"""Two worker processes share one HyperTuner study on a real PostgreSQL server and never repeat a suggestion."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = textwrap.dedent("""
    import math, sys, time
    from lightning_addons.tuner import HyperTuner
    SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0},
             "y": {"type": "float", "low": 0.0, "high": 1.0},
             "threads": {"type": "int", "low": 1, "high": 4}}
    def fn(p):
        time.sleep(0.2)  # trials overlap between the workers
        return {"f1": p["x"], "f2": 1 - math.sqrt(p["x"]) + p["y"] + 0.01 * p["threads"]}
    HyperTuner(space=SPACE, objectives=["f1:min", "f2:min"], trial_fn=fn, n_trials=int(sys.argv[2]), n_init=6,
               storage=sys.argv[1], study_name="shared", progress=False, seed=0).run()
""")


def test_two_workers_on_one_postgres_study_never_run_the_same_suggestion(postgres_url, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    import optuna

    # create the study first, so both workers load it (no create race)
    optuna.create_study(study_name="shared", storage=postgres_url, directions=["minimize", "minimize"])
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), postgres_url, "10"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    keys = [tuple(sorted(t.params.items())) for t in trials]
    assert 10 <= len(trials) <= 11  # the shared budget (one extra possible when both ask at once)
    assert len(set(keys)) == len(keys), "a suggestion was run twice"
    assert study.user_attrs.get("hypertuner_mopir") is not None  # MOPIR shared through the study
