"""The ``lightning-addons`` command: one table of subcommands, each imported only when it runs.

``lightning-addons fit|validate|test|predict --config CONFIG.yaml`` work as in LightningCLI (our classes
resolve by short name); ``tune`` runs a HyperTuner study, ``federate`` a federated run. ``lightning-addons
--help`` lists them all without importing Lightning. Third-party packages may add subcommands with
:func:`register_command`.

Examples:
    >>> from lightning_addons.cli import COMMANDS, extra_commands
    >>> sorted(COMMANDS)
    ['federate', 'fit', 'predict', 'test', 'tune', 'validate']
    >>> extra_commands()["tune"]
    'lightning_addons.tuner.cli:main'
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from lightning_addons.resolve import DEBUG_ENV, PUBLIC_MODULES, ConfigError  # noqa: F401  (PUBLIC_MODULES: old name)

PROG = "lightning-addons"
_LIGHTNING = "lightning_addons.lightning_cli:cli_main"


class Command(NamedTuple):
    target: str  #: ``"package.module:function"`` called with the remaining argv
    help: str


#: Every subcommand: name -> (target, one-line help). Targets are imported only when their command runs.
COMMANDS: dict[str, Command] = {
    "fit": Command(_LIGHTNING, "Train a LightningModule (LightningCLI; then tests the best checkpoint)."),
    "validate": Command(_LIGHTNING, "Run one evaluation epoch on the validation set (LightningCLI)."),
    "test": Command(_LIGHTNING, "Run one evaluation epoch on the test set (LightningCLI)."),
    "predict": Command(_LIGHTNING, "Run inference on a prediction set (LightningCLI)."),
    "tune": Command("lightning_addons.tuner.cli:main", "Run a HyperTuner study (multi-objective tuning)."),
    "federate": Command(
        "lightning_addons.cli:federate",
        "Run a federated config in simulation, or write its Flower app.",
    ),
}

#: Experiment drivers ``federate`` runs for a config holding a section of their name (section -> target);
#: they live in :mod:`lightning_addons.experiments`, above the library, so only the CLI names them.
EXPERIMENTS: dict[str, str] = {"cachefl": "lightning_addons.experiments.cachefl:run_cachefl"}


def federate(argv: list[str] | None = None) -> Any:
    """``lightning-addons federate``: :func:`lightning_addons.federated.cli.main` with :data:`EXPERIMENTS`."""
    from lightning_addons.federated.cli import main as federate_main

    return federate_main(argv, experiments=EXPERIMENTS)


def register_command(name: str, target: str, help: str = "") -> None:
    """Register ``lightning-addons NAME ...`` to call ``target`` (``"package.module:function"``) with argv."""
    COMMANDS[name] = Command(target, help)


def extra_commands() -> dict[str, str]:
    """The subcommands that are not LightningCLI ones: name -> target."""
    return {name: cmd.target for name, cmd in COMMANDS.items() if cmd.target != _LIGHTNING}


def help_text() -> str:
    """The text of ``lightning-addons --help``."""
    width = max(len(n) for n in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items())
    return (
        f"usage: {PROG} <command> [options]   ({PROG} <command> --help for the options)\n\n"
        f"PyTorch Lightning plugins: GMM filter audit and pruning, CacheFL, MLP-replaced attention, HyperTuner.\n\n"
        f"commands:\n{rows}\n"
    )


def _call(target: str, argv: list[str] | None) -> Any:
    module, func = target.split(":")
    fn: Callable[[list[str] | None], Any] = getattr(importlib.import_module(module), func)
    return fn(argv)


def cli_main(args: list[str] | None = None, run: bool = True):
    """Build (and by default run) the LightningCLI; ``args`` as for ``LightningCLI``."""
    from lightning_addons.lightning_cli import cli_main as _cli_main

    return _cli_main(args, run=run)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-addons`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(help_text())
        if not args:
            raise SystemExit(2)
        return
    cmd = COMMANDS.get(args[0])
    if cmd is None or cmd.target == _LIGHTNING:
        cli_main(argv)  # None: LightningCLI reads sys.argv itself (and reports an unknown command)
        return
    try:
        _call(cmd.target, args[1:])
    except (ConfigError, ValueError, FileNotFoundError, PermissionError, ModuleNotFoundError) as err:
        # a bad config, argument or path: the one line that names it; the traceback only on request
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"{PROG} {args[0]}: error: {err}", file=sys.stderr)
        if not isinstance(err, ConfigError):  # a YAML error's one line already names the file and line
            print(f"({DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Any:
    if name in ("LightningAddonsCLI", "import_public_classes"):
        return getattr(importlib.import_module("lightning_addons.lightning_cli"), name)
    if name == "_import_public_classes":
        return importlib.import_module("lightning_addons.lightning_cli").import_public_classes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    main()
