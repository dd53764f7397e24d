"""Energy meters: NVIDIA NVML, Intel RAPL (``/sys/class/powercap``) and a CPU-time estimate.

Every reading is labelled with its ``source`` (``"nvml"``, ``"rapl"``, ``"cpu-time-estimate"``) so an
estimate is never mistaken for a measurement. :func:`best_meter` picks NVML when a CUDA device is used and
NVML answers, else RAPL where its counters are readable, else the estimate.

Examples:
    >>> meter = CPUTimeMeter(watts_per_core=10.0)
    >>> meter.start(); _ = sum(range(10000)); joules = meter.stop()
    >>> meter.source, joules >= 0
    ('cpu-time-estimate', True)
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

RAPL_ROOT = "/sys/class/powercap"
#: Default per-core power for the CPU-time estimate (W per busy core); configurable everywhere.
DEFAULT_WATTS_PER_CORE = 10.0


class EnergyMeterBase:
    """Start/stop interface: ``start()``, then ``read()`` (joules since start) or ``stop()``."""

    source = "none"

    def start(self) -> None:
        raise NotImplementedError

    def read(self) -> float:
        raise NotImplementedError

    def stop(self) -> float:
        joules = self.read()
        self._stopped_at = joules
        return joules


class CPUTimeMeter(EnergyMeterBase):
    """Estimate: (user + system CPU seconds of this process and its waited-for children) x W per core.

    Args:
        watts_per_core: assumed power of one fully busy core, in watts (> 0).

    Raises:
        ValueError: ``watts_per_core <= 0``.

    Examples:
        >>> m = CPUTimeMeter(5.0); m.start(); m.read() >= 0
        True
    """

    source = "cpu-time-estimate"

    def __init__(self, watts_per_core: float = DEFAULT_WATTS_PER_CORE) -> None:
        if not watts_per_core > 0:
            raise ValueError(f"`watts_per_core` must be > 0, got {watts_per_core!r}.")
        self.watts_per_core = float(watts_per_core)
        self._t0 = 0.0

    @staticmethod
    def _cpu_seconds() -> float:
        s = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def start(self) -> None:
        self._t0 = self._cpu_seconds()

    def read(self) -> float:
        return (self._cpu_seconds() - self._t0) * self.watts_per_core


class RAPLMeter(EnergyMeterBase):
    """Intel RAPL counters: package domains (``intel-rapl:N``) plus their ``dram`` sub-domains, in joules.

    Counter wrap-around is handled with ``max_energy_range_uj``.

    Args:
        root: the powercap folder (a fake tree in tests).
        include_dram: add the DRAM sub-domains.

    Raises:
        FileNotFoundError: no readable ``intel-rapl`` package domain under ``root``.

    Examples:
        >>> RAPLMeter.available("/nonexistent")
        False
    """

    source = "rapl"

    def __init__(self, root: str | os.PathLike = RAPL_ROOT, include_dram: bool = True) -> None:
        self.root = Path(root)
        self.domains = self.find_domains(self.root, include_dram)
        if not self.domains:
            raise FileNotFoundError(
                f"no readable RAPL package domain under {str(self.root)!r} (looked for intel-rapl:N/energy_uj)."
            )
        self._last: list[int] = []
        self._acc = 0.0

    @staticmethod
    def find_domains(root: Path, include_dram: bool = True) -> list[Path]:
        root = Path(root)
        if not root.is_dir():
            return []
        out = []
        for pkg in sorted(root.glob("intel-rapl:*")):
            if pkg.name.count(":") != 1 or not (pkg / "energy_uj").is_file():
                continue
            try:
                int((pkg / "energy_uj").read_text())
            except (OSError, ValueError):
                continue
            out.append(pkg)
            if include_dram:
                for sub in sorted(pkg.glob(f"{pkg.name}:*")):
                    try:
                        if (sub / "name").read_text().strip() == "dram":
                            int((sub / "energy_uj").read_text())
                            out.append(sub)
                    except (OSError, ValueError):
                        continue
        return out

    @classmethod
    def available(cls, root: str | os.PathLike = RAPL_ROOT) -> bool:
        return bool(cls.find_domains(Path(root)))

    def _raw(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def _ranges(self) -> list[int]:
        out = []
        for d in self.domains:
            try:
                out.append(int((d / "max_energy_range_uj").read_text()))
            except (OSError, ValueError):
                out.append(2**32)
        return out

    def start(self) -> None:
        self._last = self._raw()
        self._acc = 0.0

    def read(self) -> float:
        now = self._raw()
        for k, (a, b, rng) in enumerate(zip(self._last, now, self._ranges())):
            delta = b - a if b >= a else b + rng - a  # wrapped around
            self._acc += delta / 1e6
            self._last[k] = b
        return self._acc


class NVMLMeter(EnergyMeterBase):
    """NVIDIA NVML total energy counters (millijoules since driver load) of the given GPUs.

    Args:
        device_indices: CUDA device indices (default: all visible).

    Raises:
        RuntimeError: NVML unavailable (no ``pynvml``/driver) or no GPU.
    """

    source = "nvml"

    def __init__(self, device_indices: list[int] | None = None) -> None:
        try:
            import pynvml
        except ImportError as err:
            raise RuntimeError("NVML energy needs the `nvidia-ml-py` package (import pynvml).") from err
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception as err:  # noqa: BLE001 - any NVML error means unavailable
            raise RuntimeError(f"NVML is not available: {err}") from err
        if count == 0:
            raise RuntimeError("NVML found no GPU.")
        idx = list(range(count)) if device_indices is None else list(device_indices)
        self._nvml = pynvml
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in idx]
        self._t0: list[int] = []

    def _raw(self) -> list[int]:
        return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def start(self) -> None:
        self._t0 = self._raw()

    def read(self) -> float:
        return sum(b - a for a, b in zip(self._t0, self._raw())) / 1e3


def best_meter(
    prefer_gpu: bool | None = None,
    rapl_root: str | os.PathLike = RAPL_ROOT,
    watts_per_core: float = DEFAULT_WATTS_PER_CORE,
) -> EnergyMeterBase:
    """The best available meter: NVML (if a GPU is used), then RAPL, then the CPU-time estimate.

    Args:
        prefer_gpu: try NVML first (default: when CUDA is available).
        rapl_root: powercap folder.
        watts_per_core: per-core power of the estimate.

    Examples:
        >>> best_meter(prefer_gpu=False, rapl_root="/nonexistent").source
        'cpu-time-estimate'
    """
    if prefer_gpu is None:
        try:
            import torch

            prefer_gpu = torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            prefer_gpu = False
    if prefer_gpu:
        try:
            return NVMLMeter()
        except RuntimeError:
            pass
    if RAPLMeter.available(rapl_root):
        return RAPLMeter(rapl_root)
    return CPUTimeMeter(watts_per_core)


class WallClock:
    """``time.perf_counter`` stopwatch (training wall time objective)."""

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def read(self) -> float:
        return time.perf_counter() - self._t0
