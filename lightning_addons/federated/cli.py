"""``lightning-addons federate``: run a federated config in simulation, or write its Flower app.

    lightning-addons federate --config examples/configs/cachefl_digits.yaml
    lightning-addons federate --config my_fl.yaml --out runs/fl.json
    lightning-addons federate --config my_fl.yaml --flower-app runs/flower_app --result runs/flower.json

Any key of the config takes a dotted override as in LightningCLI (``--federation.rounds 2``,
``--cachefl.seeds [0]``, ``--model.init_args.lr 0.01``).

A config with an experiment's section (``cachefl:``) runs that experiment driver with the section as keyword
arguments (:func:`lightning_addons.experiments.run_cachefl`; the table of drivers is
:data:`lightning_addons.cli.EXPERIMENTS`, handed in by the ``lightning-addons`` command, so this package
imports no experiment); otherwise it holds ``model``/``data``/``federation`` sections
(:mod:`lightning_addons.federated.config`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from lightning_addons.resolve import apply_overrides, load_yaml, parse_overrides

#: Top-level sections of a federate config (a dotted override may create them), besides the experiments'.
FEDERATE_SECTIONS = ("model", "data", "federation", "trainer")


def main(argv: list[str] | None = None, experiments: Mapping[str, str] | None = None) -> dict:
    """Run ``federate`` with ``argv``; ``experiments`` maps a config section to its driver
    (``"package.module:function"``, imported only when a config has that section)."""
    experiments = dict(experiments or {})
    parser = argparse.ArgumentParser(
        prog="lightning-addons federate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML config (model/data/federation, or cachefl)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--flower-app", default=None, help="write a Flower app folder for this config and exit"
    )
    parser.add_argument(
        "--result", default=None, help="with --flower-app: where the ServerApp writes its JSON"
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help="cachefl: override `alphas`")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="cachefl: override `seeds`")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing federation checkpoint")
    parser.add_argument("--print_config", action="store_true", help="validate the config, print it and exit")
    args, rest = parser.parse_known_args(argv)
    path = Path(args.config)
    if not path.is_file():
        parser.error(f"--config {str(path)!r} does not exist")
    raw = load_yaml(path)  # malformed YAML: ConfigError naming the file and line
    raw = apply_overrides(raw, parse_overrides(rest), sections=(*FEDERATE_SECTIONS, *experiments))
    section = next((name for name in experiments if name in raw), None)
    if section is None and "cachefl" in raw:
        parser.error(
            "a `cachefl:` section is an experiment: run it with the `lightning-addons federate` command, or "
            "call lightning_addons.experiments.run_cachefl(**section)"
        )
    if section is not None:
        module, _, func = experiments[section].partition(":")
        driver = getattr(importlib.import_module(module), func)
        allowed = set(inspect.signature(driver).parameters)
        unknown = sorted(set(raw[section] or {}) - allowed)
        if unknown:
            parser.error(f"unknown `{section}` keys {unknown}; allowed: {sorted(allowed)}")
        if args.print_config:
            print(yaml.safe_dump(raw, sort_keys=False))
            raise SystemExit(0)
        kwargs = dict(raw[section] or {})
        if args.out:
            kwargs["out"] = args.out
        if args.alphas:
            kwargs["alphas"] = args.alphas
        if args.seeds:
            kwargs["seeds"] = args.seeds
        return driver(**kwargs)

    from lightning_addons.federated.config import build_simulation, load_config

    cfg = load_config(raw)
    if args.print_config:
        print(yaml.safe_dump(raw, sort_keys=False))
        raise SystemExit(0)
    if args.flower_app:
        from lightning_addons.federated.flower import write_flower_app

        app = write_flower_app(args.flower_app, path, result_path=args.result)
        print(f"Flower app written to {app}; run it with: flwr run {app} <superlink-name>")
        return {"flower_app": str(app)}
    sim = build_simulation(cfg)
    result = sim.fit(resume=not args.no_resume)
    summary = {
        "best_round": result.best_round,
        "best_metric": result.best_metric,
        "test": result.test_metrics,
        "communication": result.communication,
        "history": [{k: h[k] for k in ("round", "clients", "metrics", "dropped")} for h in result.history],
    }
    print(
        json.dumps({k: summary[k] for k in ("best_round", "best_metric", "test", "communication")}, indent=2)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary
