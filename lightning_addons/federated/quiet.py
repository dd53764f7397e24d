"""Quieter many-Trainer runs: silence the per-Trainer info lines and data-loader hints that Lightning repeats
for every client of a simulation, inside a ``with`` block only (levels and warning filters are restored).

Examples:
    >>> import logging
    >>> with quiet_lightning():
    ...     logging.getLogger("lightning.pytorch").level
    30
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from lightning_addons._quiet import quiet_upstream

#: Lightning warnings that repeat for every client Trainer (matched by message, as Lightning has no
#: dedicated warning categories for them).
REPEATED_WARNINGS = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*`max_epochs` was not set.*",
    ".*Total length of .* across ranks is zero.*",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block: Lightning's loggers at WARNING, :data:`REPEATED_WARNINGS` ignored, and the upstream
    noise of :func:`lightning_addons._quiet.quiet_upstream` (product tips, torch's ``LeafSpec`` deprecation)
    dropped."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with quiet_upstream(), warnings.catch_warnings():
        for message in REPEATED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for lg, lvl in zip(loggers, levels):
                lg.setLevel(lvl)
