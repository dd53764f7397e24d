"""The LightningCLI shell behind ``lightning-addons fit|validate|test|predict`` (imports Lightning).

:mod:`lightning_addons.cli` dispatches here only when one of these subcommands runs, so ``--help`` and the
other subcommands do not pay for importing Lightning and jsonargparse.
"""

from __future__ import annotations

import importlib

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lightning_addons.resolve import PUBLIC_MODULES


def import_public_classes() -> None:
    """Import every class our public packages export (they export lazily), so jsonargparse finds the
    subclasses behind short names such as ``class_path: GMMFilterAuditor``."""
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            getattr(module, attr)


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


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningAddonsCLI:
    """Build (and by default run) the CLI; ``args`` as for ``LightningCLI``."""
    from lightning_addons._quiet import quiet_upstream

    import_public_classes()
    with quiet_upstream():
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
