"""The ``lightning-addons`` command: LightningCLI with our classes resolvable by short name.

``lightning-addons fit|validate|test|predict --config CONFIG.yaml`` work as in LightningCLI; extra
subcommands (``tune``, ``federate``, ...) register themselves with :func:`register_command`.

Example:
    >>> from lightning_addons.cli import extra_commands
    >>> isinstance(extra_commands(), dict)
    True
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

#: Modules whose public classes must be imported so jsonargparse resolves their short names
#: (``class_path: GMMFilterAuditor``). Each must import without optional dependencies.
PUBLIC_MODULES = (
    "lightning_addons.callbacks",
    "lightning_addons.modules",
    "lightning_addons.modules.nn",
    "lightning_addons.datamodules",
    "lightning_addons.strategies",
)

#: name -> "module:function" for extra subcommands, imported only when called.
_EXTRA_COMMANDS: dict[str, str] = {}


def register_command(name: str, target: str) -> None:
    """Register ``lightning-addons NAME ...`` to call ``target`` (``"package.module:function"``) with argv."""
    _EXTRA_COMMANDS[name] = target


def extra_commands() -> dict[str, str]:
    """The registered extra subcommands (loading the feature packages that register them)."""
    _load_extra_commands()
    return dict(_EXTRA_COMMANDS)


def _import_public_classes() -> None:
    for name in PUBLIC_MODULES:
        importlib.import_module(name)


class LightningAddonsCLI(LightningCLI):
    """LightningCLI whose ``fit`` ends with a test of the best checkpoint unless ``--test_after_fit false``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, run `test` on the best checkpoint (or the last weights) and print the metrics.",
        )

    def after_fit(self) -> None:
        cfg = self.config.get(self.subcommand, self.config)
        if not cfg.get("test_after_fit", False) or self.datamodule is None:
            return
        if not hasattr(self.datamodule, "test_dataloader"):
            return
        ckpt = "best" if getattr(self.trainer.checkpoint_callback, "best_model_path", "") else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def _load_extra_commands() -> None:
    # Feature packages register their subcommands on import; importing them needs no optional extra.
    # A failure here is a real bug (these packages import no optional dependency): let it surface
    # rather than silently dropping the subcommand.
    for name in ("lightning_addons.tuner", "lightning_addons.strategies"):
        importlib.import_module(name)


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningAddonsCLI:
    """Build (and by default run) the CLI; ``args`` as for ``LightningCLI``."""
    _import_public_classes()
    return LightningAddonsCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-addons`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    _load_extra_commands()
    if args and args[0] in _EXTRA_COMMANDS:
        module, func = _EXTRA_COMMANDS[args[0]].split(":")
        fn: Callable[[list[str]], object] = getattr(importlib.import_module(module), func)
        fn(args[1:])
        return
    cli_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":  # pragma: no cover
    main()
