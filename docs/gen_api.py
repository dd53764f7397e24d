"""Write the API reference pages (docs/api/*.md) from each public package's ``__all__``.

Run after adding or moving a public name: ``python docs/gen_api.py``. The test suite checks that the pages
are current (tests/foundation/test_docs.py) and that ``mkdocs build --strict`` renders them without a warning.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

#: (package, page title, one-line summary): one API page each, in this order.
PACKAGES = [
    ("lightning_addons.callbacks", "Callbacks", "Lightning callbacks: GMM auditor, pruning, FLOPs, energy."),
    ("lightning_addons.modules", "Modules", "LightningModules: classifier, CLIP cache adapter, forecaster."),
    (
        "lightning_addons.modules.nn",
        "Models (pure PyTorch)",
        "CNNs, RAM encoders, forecasters, FLOPs counting.",
    ),
    ("lightning_addons.datamodules", "Data modules", "Digits, time series, synthetic cache sets."),
    (
        "lightning_addons.gmm",
        "GMM maths (pure PyTorch)",
        "Mixture fits, PCA panels, rules, per-layer audits.",
    ),
    (
        "lightning_addons.strategies",
        "Strategies and aggregation",
        "FedAvg strategy, FedProx, aggregation maths.",
    ),
    ("lightning_addons.federated", "Federated simulation", "In-process runner, partitions, byte meter."),
    (
        "lightning_addons.experiments",
        "Experiment drivers",
        "End-to-end experiments on the public API (CacheFL), run by `lightning-addons federate`.",
    ),
    ("lightning_addons.energy", "Energy meters (pure)", "NVML, RAPL and CPU-time energy meters, wall clock."),
    ("lightning_addons.tuner", "HyperTuner", "Search space, objectives, ADUMBO, MOPIR, reports."),
    (
        "lightning_addons.zoo",
        "Zoo",
        "The embedded tiny world: tiny open_clip model and class-conditional UNet.",
    ),
]
API_DIR = Path(__file__).resolve().parent / "api"


def public_objects(package: str) -> list[tuple[str, str]]:
    """``(name, dotted path of its definition)`` for every class and function in ``package.__all__`` that is
    defined inside ``package`` (a name re-exported from elsewhere is documented where it is defined)."""
    module = importlib.import_module(package)
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith(package + "."):
            out.append((name, f"{obj.__module__}.{obj.__qualname__}"))
    return out


def render(package: str, title: str, summary: str) -> str:
    lines = [f"# {title}", "", f"`{package}`: {summary}", ""]
    for name, path in public_objects(package):
        lines += [f"::: {path}", "    options:", f"      heading: {name}", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """File name -> content of every API page, plus the index of API pages."""
    out = {}
    index = ["# API reference", "", "| package | what it holds |", "| --- | --- |"]
    for package, title, summary in PACKAGES:
        fname = package.removeprefix("lightning_addons.").replace(".", "_") + ".md"
        out[fname] = render(package, title, summary)
        index.append(f"| [`{package}`]({fname}) | {summary} |")
    out["index.md"] = "\n".join(index) + "\n"
    return out


def main() -> int:
    API_DIR.mkdir(exist_ok=True)
    for fname, text in pages().items():
        (API_DIR / fname).write_text(text)
    print(f"wrote {len(PACKAGES) + 1} pages to {API_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
