"""Narrow, scoped silencing of upstream output our users cannot act on (no global side effects).

:func:`quiet_upstream` drops Lightning's product tips ("💡 Tip: ... litlogger/litmodels") and torch's
``LeafSpec`` deprecation, which Lightning's own ``_pytree`` triggers, for the duration of a ``with`` block.
Everything else (Lightning's other messages, every other warning) passes through.

Examples:
    >>> import logging
    >>> with quiet_upstream():
    ...     logging.getLogger("lightning.pytorch.utilities.rank_zero").filters[-1].filter(
    ...         logging.makeLogRecord({"msg": "💡 Tip: For seamless cloud logging ..."}))
    False
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Loggers Lightning's ``rank_zero_info`` writes through.
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
TIP_PREFIX = "💡 Tip:"
#: (category, message regex) of upstream warnings silenced inside :func:`quiet_upstream`.
UPSTREAM_WARNINGS = ((FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(TIP_PREFIX)


@contextmanager
def quiet_upstream() -> Iterator[None]:
    """Drop Lightning's product tips and the listed upstream warnings inside the block only."""
    tips = _DropTips()
    loggers = [logging.getLogger(name) for name in RANK_ZERO_LOGGERS]
    for lg in loggers:
        lg.addFilter(tips)
    try:
        with warnings.catch_warnings():
            for category, message in UPSTREAM_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(tips)
