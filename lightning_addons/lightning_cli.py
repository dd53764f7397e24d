"""The LightningCLI shell behind ``lightning-addons fit|validate|test|predict`` (imports Lightning).

:mod:`lightning_addons.cli` dispatches here only when one of these subcommands runs, so ``--help`` and the
other subcommands do not pay for importing Lightning and jsonargparse.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_addons.resolve import DEBUG_ENV, PUBLIC_MODULES


def import_public_classes() -> None:
    """Import every class our public packages export (they export lazily), so jsonargparse finds the
    subclasses behind short names such as ``class_path: GMMFilterAuditor``."""
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            getattr(module, attr)


def summarise_parser_error(message: str) -> str:
    r"""The line of a jsonargparse error that matters, first: the key, what was expected and the value given,
    with "did you mean" for an unknown short ``class_path``.

    Examples:
        >>> summarise_parser_error('Parser key "trainer.callbacks":\n  Does not validate\n'
        ...     "    Expected a typing.Literal['anomaly', 'l1']. Got value: chh\n  Given value: x")
        "trainer.callbacks: Expected a typing.Literal['anomaly', 'l1']. Got value: chh"
        >>> summarise_parser_error('Parser key "model":\n  Expected a dot import path string: LeNet6')
        "model: unknown class_path 'LeNet6': did you mean 'LeNet5'?"
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    key = keys[0] if keys else None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    path = re.search(r"Expected a dot import path string: (\S+)", message)
    if path:
        from lightning_addons.resolve import short_names

        close = difflib.get_close_matches(path.group(1), list(short_names()), n=3, cutoff=0.6)
        hint = f": did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{key}: unknown class_path {path.group(1)!r}{hint}" if key else f"unknown class_path{hint}"
    for pattern in (
        r"Got value:",
        r"^Expected",
        r"not a valid|Unrecognized|unrecognized|does not exist|Invalid",
    ):
        hit = next((line for line in lines if re.search(pattern, line)), None)
        if hit:
            return f"{key}: {hit}" if key and not hit.startswith(key) else hit
    return lines[0] if lines else message


class _OneLineErrorParser(LightningArgumentParser):
    """Prints the line that matters first, then the details, without the 50-line usage block."""

    def error(self, message: str, ex: Exception | None = None):  # noqa: D401 - argparse API
        if os.environ.get(DEBUG_ENV) == "1":
            return super().error(message, ex)
        sys.stderr.write(f"{self.prog}: error: {summarise_parser_error(message)}\n")
        sys.stderr.write("details:\n  " + "\n  ".join(message.splitlines()) + "\n")
        sys.stderr.write(f"(see `{self.prog} --help`; {DEBUG_ENV}=1 shows the parser's full output)\n")
        raise SystemExit(2)


class LightningAddonsCLI(LightningCLI):
    """LightningCLI whose ``fit`` ends with a test of the best checkpoint unless ``--test_after_fit false``."""

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The configured Trainer plus :class:`~lightning_addons.callbacks.CheckpointDigest` (``require=False``)
        unless the config has one: checkpoints written by our CLI carry a digest of the weights, and a damaged
        one stops ``fit``/``validate``/``test --ckpt_path`` with an error naming the file."""
        from lightning_addons.callbacks.checkpoint_digest import CheckpointDigest

        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, CheckpointDigest) for cb in trainer.callbacks):
            trainer.callbacks.append(CheckpointDigest(require=False))
        return trainer

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
            parser_class=_OneLineErrorParser,
        )
