"""``lightning-addons tune --config CONFIG.yaml``: run a HyperTuner study from a LightningCLI-style config.

The YAML holds the usual ``model``/``data``/``trainer``/``seed_everything`` sections (as for
``lightning-addons fit``) plus a ``tune`` section::

    tune:
      algorithm: adumbo            # adumbo | adumbo_w1 | adumbo_w0 | random | sobol | qnehvi | tpe | nsga2 | gp
      n_trials: 16
      objectives: [val_acc:max, time:min, energy:min]
      storage: null                # default sqlite:///<output_dir>/study.db; postgresql://... for many workers
      output_dir: runs/tune_digits
      space:
        lr: {type: float, low: 1.0e-4, high: 0.03, log: true, default: 0.001}
        batch_size: {type: categorical, choices: [16, 32, 64, 128], default: 64, layer: system}

Command-line flags override the ``tune`` section (``--n_trials 4 --storage sqlite:///x.db``), and any key of
the config takes a dotted override as in LightningCLI (``--trainer.max_epochs 2 --tune.space.lr.high 0.01
--model.init_args.model.init_args.width 0.5``). Running the
same command again resumes the study; starting it on several machines with one PostgreSQL URL shares it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

TUNE_KEYS = {
    "algorithm",
    "n_trials",
    "n_init",
    "seed",
    "storage",
    "study_name",
    "output_dir",
    "mopir",
    "timeout",
    "watts_per_core",
    "energy_source",
    "objectives",
    "space",
    "progress",
    "heartbeat_interval",
    "optimizer_kwargs",
    "max_consecutive_failures",
    "logger",
    "pruner",
    "repeats",
}


#: Top-level sections of a tune config (a dotted override may create them).
TUNE_SECTIONS = ("tune", "model", "data", "trainer")


def build_tuner(config: dict, overrides: dict | None = None):
    """A :class:`~lightning_addons.tuner.HyperTuner` from a parsed config (and CLI overrides)."""
    from lightning_addons.tuner.tuner import HyperTuner

    if "tune" not in config or not isinstance(config["tune"], dict):
        raise ValueError("the config needs a `tune:` section with at least `space` and `objectives`.")
    tune = dict(config["tune"])
    unknown = set(tune) - TUNE_KEYS
    if unknown:
        raise ValueError(f"unknown keys in `tune`: {sorted(unknown)}; allowed: {sorted(TUNE_KEYS)}.")
    for k, v in (overrides or {}).items():
        if v is not None:
            tune[k] = v
    for key in ("space", "objectives"):
        if key not in tune:
            raise ValueError(f"the `tune` section needs `{key}`.")
    if "model" not in config:
        raise ValueError("the config needs a `model:` section ({class_path, init_args}).")
    return HyperTuner(
        space=tune.pop("space"),
        objectives=tune.pop("objectives"),
        model=config["model"],
        data=config.get("data"),
        trainer=config.get("trainer") or {},
        seed_everything=config.get("seed_everything"),
        **tune,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-addons tune``."""
    import yaml

    from lightning_addons.resolve import apply_overrides, load_yaml, parse_overrides

    ap = argparse.ArgumentParser(
        prog="lightning-addons tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", "-c", required=True, help="YAML with tune/model/data/trainer sections")
    ap.add_argument("--n_trials", type=int)
    ap.add_argument("--n_init", type=int)
    ap.add_argument("--algorithm")
    ap.add_argument("--storage")
    ap.add_argument("--study_name")
    ap.add_argument("--output_dir")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--no_progress", action="store_true")
    ap.add_argument("--print_config", action="store_true", help="validate the config, print it and exit")
    args, rest = ap.parse_known_args(list(argv) if argv is not None else None)
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {str(path)!r}")
    config = load_yaml(path)  # malformed YAML: ConfigError naming the file and line
    config = apply_overrides(config, parse_overrides(rest), sections=TUNE_SECTIONS)
    overrides = {
        k: getattr(args, k)
        for k in ("n_trials", "n_init", "algorithm", "storage", "study_name", "output_dir", "seed", "timeout")
    }
    if args.no_progress:
        overrides["progress"] = False
    tuner = build_tuner(config, overrides)
    if args.print_config:
        config["tune"] = {**config["tune"], **{k: v for k, v in overrides.items() if v is not None}}
        print(yaml.safe_dump(config, sort_keys=False))
        raise SystemExit(0)
    result = tuner.run()
    from lightning_addons.tuner.report import write_report

    paths = write_report(result, tuner.output_dir, space=tuner.space)
    print(Path(paths["summary"]).read_text())
    print("report files:", ", ".join(str(p) for p in paths.values()))
    return 0
