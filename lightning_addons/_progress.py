"""Progress of long loops (federated rounds, tuner trials, experiment methods): a bar or plain lines.

Pure Python (no Lightning, no torch). A tqdm bar is drawn only when both stdout and stderr are terminals;
otherwise (a file, a pipe, CI, a notebook's captured output) every step prints one plain, complete line on
stdout, so a log file stays readable. ``LIGHTNING_ADDONS_PROGRESS`` (``auto``, ``bar``, ``plain``, ``off``)
overrides the choice for every loop at once.

Examples:
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(total=2, desc="rounds", unit="round", mode="plain", stream=out) as p:
    ...     p.update(postfix={"val_acc": 0.5})
    ...     p.update(postfix={"val_acc": 0.75})
    >>> print(out.getvalue(), end="")  # doctest: +ELLIPSIS
    rounds: 0/2 rounds
    rounds: 1/2 rounds  val_acc=0.5000  [...s]
    rounds: 2/2 rounds  val_acc=0.7500  [...s]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

MODES = ("auto", "bar", "plain", "off")
ENV = "LIGHTNING_ADDONS_PROGRESS"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def progress_mode(mode: str | bool = "auto") -> str:
    """Resolve ``mode`` (``True`` = ``"auto"``, ``False`` = ``"off"``) to ``"bar"``, ``"plain"`` or ``"off"``.

    ``"auto"`` follows ``$LIGHTNING_ADDONS_PROGRESS`` when set, else draws a bar only when stdout and
    stderr are both terminals.

    Raises:
        ValueError: ``mode`` or the environment variable is not one of :data:`MODES`.

    Examples:
        >>> progress_mode(False), progress_mode("plain")
        ('off', 'plain')
    """
    if mode is True:
        mode = "auto"
    elif mode is False:
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {list(MODES)} (or True/False), got {mode!r}.")
    if mode != "auto":
        return mode
    env = os.environ.get(ENV, "").strip().lower()
    if env:
        if env not in MODES:
            raise ValueError(f"${ENV} must be one of {list(MODES)}, got {env!r}.")
        if env != "auto":
            return env
    return "bar" if _isatty(sys.stdout) and _isatty(sys.stderr) else "plain"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def format_postfix(postfix: Mapping[str, Any] | str | None) -> str:
    """``{"val_acc": 0.5, "clients": 3}`` -> ``"val_acc=0.5000 clients=3"`` (floats with 4 decimals).

    Examples:
        >>> format_postfix({"val_acc": 0.5, "clients": 3})
        'val_acc=0.5000 clients=3'
    """
    if postfix is None:
        return ""
    if isinstance(postfix, str):
        return postfix
    return " ".join(f"{k}={_fmt(v)}" for k, v in postfix.items())


class Progress:
    """Progress over ``total`` steps: a tqdm bar on a terminal, one plain line per step otherwise.

    Args:
        total: number of steps.
        desc: what is counted (``"federated rounds"``, ``"HyperTuner"``).
        unit: one step's name (a line says ``3/10 rounds``).
        initial: steps already done (a resumed run).
        mode: ``"auto"``/``True``, ``"bar"``, ``"plain"``, ``"off"``/``False`` (see :func:`progress_mode`).
        stream: where plain lines go (default ``sys.stdout`` at the time of the call).

    Raises:
        ValueError: a bad ``mode``, or ``total``/``initial`` below 0.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        initial: int = 0,
        mode: str | bool = "auto",
        stream: IO[str] | None = None,
    ) -> None:
        if total < 0 or initial < 0:
            raise ValueError(f"`total` and `initial` must be >= 0, got total={total!r}, initial={initial!r}.")
        self.mode = progress_mode(mode)
        self.total, self.desc, self.unit = int(total), desc, unit
        self._units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")
        self.n = int(initial)
        self.stream = stream
        self._t0 = time.perf_counter()
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, file=sys.stderr)
        elif self.mode == "plain":
            self.line(f"{self.n}/{self.total} {self._units}" + (" (resumed)" if self.n else ""))

    def line(self, text: str) -> None:
        """Print ``"<desc>: <text>"`` as one plain line (above the bar in bar mode; nothing when off)."""
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(f"{self.desc}: {text}", file=sys.stderr)
            return
        stream = self.stream if self.stream is not None else sys.stdout
        print(f"{self.desc}: {text}", file=stream, flush=True)

    def update(self, n: int = 1, postfix: Mapping[str, Any] | str | None = None) -> None:
        """Count ``n`` finished steps and show ``postfix`` (the latest metrics) beside them."""
        self.n += n
        text = format_postfix(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if text:
                self._bar.set_postfix_str(text)
        elif self.mode == "plain":
            elapsed = time.perf_counter() - self._t0
            self.line(
                f"{self.n}/{self.total} {self._units}" + (f"  {text}" if text else "") + f"  [{elapsed:.1f}s]"
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
