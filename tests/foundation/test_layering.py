"""One-way layering: pure cores import no Lightning/CLI/optional framework; no import cycle between subpackages.

Layers (README "Layout"): base utilities -> pure cores -> Lightning shells -> integrations (Optuna/Flower/tsl,
experiment drivers) -> CLI. The import graph is read from the source (AST), so a lazy import inside a function
counts as an arrow too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "lightning_addons"

#: Modules that import no Lightning, no jsonargparse, no CLI and no optional framework (optuna, flwr).
#: A package listed here covers every module under it.
PURE_CORES = (
    "lightning_addons._imports",
    "lightning_addons._lazy",
    "lightning_addons._validate",
    "lightning_addons._progress",
    "lightning_addons.integrity",
    "lightning_addons.data",
    "lightning_addons.resolve",
    "lightning_addons.modules.nn",
    "lightning_addons.gmm",
    "lightning_addons.energy",
    "lightning_addons.strategies.aggregation",
    "lightning_addons.strategies.state",
    "lightning_addons.federated.partition",
    "lightning_addons.federated.flwr_partition",
    "lightning_addons.federated.meter",
    "lightning_addons.tuner.space",
    "lightning_addons.tuner.optimizers",
    "lightning_addons.tuner._pareto",
    "lightning_addons.tuner._nsga2",
    "lightning_addons.tuner.mopir",
    "lightning_addons.tuner.pruners",
)
#: Experiment drivers (integration layer): they call the library's public API only, and only the CLI
#: (``lightning_addons.cli``) imports them.
EXPERIMENTS = "lightning_addons.experiments"
FORBIDDEN = ("lightning", "lightning.pytorch", "jsonargparse", "optuna", "flwr", "lightning_addons.cli")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_pure(module: str) -> bool:
    return any(module == core or module.startswith(core + ".") for core in PURE_CORES)


PURE_MODULES = sorted(m for m in MODULES if _is_pure(m))


def _imports(module: str) -> set[str]:
    """Every ``lightning_addons`` module the source of ``module`` imports (at any depth of the AST)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import submodule`` imports the submodule
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return {m for m in found if m == "lightning_addons" or m.startswith("lightning_addons.")}


def _unit(module: str) -> str:
    """The subpackage a module belongs to (``modules.nn`` is its own unit: the pure models)."""
    parts = module.split(".")[1:]
    if parts[:2] == ["modules", "nn"]:
        return "modules.nn"
    return parts[0] if parts else "<root>"


def test_the_import_walker_sees_lazy_and_relative_imports(tmp_path):
    # The graph must not miss function-level imports (they are arrows too).
    assert "lightning_addons.lightning_cli" in _imports("lightning_addons.cli")
    assert "lightning_addons.strategies.state" in _imports("lightning_addons.federated.meter")


@pytest.mark.parametrize("core", PURE_CORES)
def test_pure_core_imports_no_lightning_cli_or_optional_framework(core):
    # One fresh interpreter per core (a package's modules are imported one after the other in it; the check
    # after each import names the first module that loaded a forbidden one).
    modules = [m for m in PURE_MODULES if m == core or m.startswith(core + ".")]
    assert modules, f"{core} names no module"
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"    bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "    if bad:\n"
        "        print(name, *bad)\n"
        "        break\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [], f"importing {proc.stdout.split()[0]} loaded {proc.stdout.split()[1:]}"


def test_pure_cores_import_only_pure_cores():
    upward = {
        (module, target)
        for module in PURE_MODULES
        for target in _imports(module)
        if target != "lightning_addons" and not _is_pure(target)
    }
    assert sorted(upward) == [], "a pure core imports a shell (an upward arrow)"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a node list (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_reports_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        src = _unit(module)
        for target in _imports(module):
            dst = _unit(target)
            if dst != src and dst != "<root>":
                graph.setdefault(src, set()).add(dst)
    assert _cycle(graph) is None, f"import cycle between subpackages: {' -> '.join(_cycle(graph))}"


def test_lazy_exports_that_share_a_submodule_name_stay_the_function():
    code = (
        "import lightning_addons.federated.partition, lightning_addons.tuner.mopir\n"
        "from lightning_addons.federated import partition\nfrom lightning_addons.tuner import mopir\n"
        "print(callable(partition), callable(mopir))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True"], proc.stderr[-2000:]


def test_moved_names_warn_with_their_new_location():
    import lightning_addons.strategies as strategies
    from lightning_addons.federated import FederatedSimulation

    with pytest.warns(
        DeprecationWarning,
        match=r"`lightning_addons.strategies.FederatedSimulation` moved: import it from `lightning_addons.federated`",
    ):
        assert strategies.FederatedSimulation is FederatedSimulation
    assert "FederatedSimulation" not in strategies.__all__


def test_energy_meters_moved_out_of_the_tuner_with_a_warning():
    import lightning_addons.tuner as tuner
    from lightning_addons.energy import CPUTimeMeter

    with pytest.warns(
        DeprecationWarning, match=r"`lightning_addons.tuner.CPUTimeMeter` moved: .*`lightning_addons.energy`"
    ):
        assert tuner.CPUTimeMeter is CPUTimeMeter
    assert "CPUTimeMeter" not in tuner.__all__


def _is_experiment(module: str) -> bool:
    return module == EXPERIMENTS or module.startswith(EXPERIMENTS + ".")


def _public_names(module: str) -> set[str] | None:
    """A package's ``__all__`` (read from its ``_EXPORTS`` table without importing it); None for a module."""
    path = MODULES[module]
    if path.name != "__init__.py":
        return None
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_experiment_drivers_call_only_the_public_api():
    drivers = [m for m in MODULES if _is_experiment(m) and MODULES[m].name != "__init__.py"]  # (not plumbing)
    assert drivers, "no experiment driver found"
    private = []
    for module in drivers:
        tree = ast.parse(MODULES[module].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning_addons"):
                target = node.module or ""
                if _is_experiment(target):
                    continue
                public = _public_names(target)
                for alias in node.names:
                    parts = target.split(".")[1:] + [alias.name]
                    if any(p.startswith("_") for p in parts) or (
                        public is not None and alias.name not in public
                    ):
                        private.append(f"{module}: from {target} import {alias.name}")
            elif isinstance(node, ast.Import):
                private += [
                    f"{module}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("lightning_addons.")
                    and any(p.startswith("_") for p in a.name.split("."))
                ]
    assert private == [], "an experiment driver imports a private or unexported name"


def test_the_library_does_not_import_its_experiment_drivers():
    importers = sorted(
        module
        for module in MODULES
        if not _is_experiment(module) and any(_is_experiment(t) for t in _imports(module))
    )
    assert importers == [], "the library must not depend on its experiment drivers"


def test_the_old_cachefl_location_warns_with_the_new_one():
    import lightning_addons.federated.cachefl as old
    from lightning_addons.experiments import run_cachefl

    with pytest.warns(
        DeprecationWarning,
        match=r"`lightning_addons.federated.cachefl.run_cachefl` moved: import it from "
        r"`lightning_addons.experiments.cachefl`",
    ):
        assert old.run_cachefl is run_cachefl
