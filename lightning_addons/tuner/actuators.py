"""Actuators: knobs outside the trial process that need root (CPU frequency, GPU power limit, sysctl).

They are off by default: a :class:`~lightning_addons.tuner.HyperTuner` uses only the actuators passed to
it explicitly, and each refuses to start without root. An actuator declares the system parameter names it
handles (they become valid ``layer: system`` parameters), ``apply`` sets them before a trial and
``restore`` puts the previous values back after it, also when the trial fails.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Actuator:
    """Base class of root-only knobs.

    Attributes:
        parameters: the system parameter names this actuator applies.
        requires_root: refuse to run without effective uid 0.

    Raises:
        PermissionError: (``check``) not root.
    """

    parameters: tuple[str, ...] = ()
    requires_root = True

    def check(self) -> None:
        if self.requires_root and os.geteuid() != 0:
            raise PermissionError(
                f"{type(self).__name__} changes machine settings and needs root (euid 0); "
                f"running as euid {os.geteuid()}."
            )

    def apply(self, values: Mapping[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def restore(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class CPUFrequencyActuator(Actuator):
    """Cap the CPU frequency through cpufreq's ``scaling_max_freq`` (parameter ``cpu_max_freq_khz``).

    Args:
        root: the ``/sys/devices/system/cpu`` folder (a fake tree in tests).

    Raises:
        PermissionError: not root (at ``apply``).
        FileNotFoundError: no ``cpu*/cpufreq/scaling_max_freq`` under ``root``.

    Examples:
        >>> CPUFrequencyActuator.parameters
        ('cpu_max_freq_khz',)
    """

    parameters = ("cpu_max_freq_khz",)

    def __init__(self, root: str | os.PathLike = "/sys/devices/system/cpu") -> None:
        self.root = Path(root)
        self._saved: dict[Path, str] = {}

    def _files(self) -> list[Path]:
        files = sorted(self.root.glob("cpu[0-9]*/cpufreq/scaling_max_freq"))
        if not files:
            raise FileNotFoundError(
                f"no cpu*/cpufreq/scaling_max_freq under {str(self.root)!r}: cpufreq is not exposed here."
            )
        return files

    def apply(self, values: Mapping[str, Any]) -> None:
        self.check()
        khz = int(values["cpu_max_freq_khz"])
        for f in self._files():
            self._saved.setdefault(f, f.read_text().strip())
            f.write_text(str(khz))

    def restore(self) -> None:
        for f, v in self._saved.items():
            f.write_text(v)
        self._saved.clear()
