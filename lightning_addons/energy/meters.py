"""Energy meters: NVIDIA NVML, Intel RAPL (``/sys/class/powercap``), CodeCarbon and a CPU-time estimate.

Every reading is labelled with its ``source`` (``"nvml"``, ``"rapl"``, ``"codecarbon"``,
``"cpu-time-estimate"``) so an estimate is never mistaken for a measurement. :func:`best_meter` picks NVML
when a CUDA device is used and NVML answers, else RAPL where its counters are readable, else the estimate;
:class:`CodeCarbonMeter` is chosen explicitly.

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
#: Energy sources one can ask for (``"auto"``: NVML, then RAPL, then the CPU-time estimate).
ENERGY_SOURCES = ("auto", "nvml", "rapl", "codecarbon", "cpu-time-estimate")


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


class CodeCarbonMeter(EnergyMeterBase):
    """CodeCarbon's offline tracker: CPU + GPU + RAM energy in joules, as CodeCarbon measures or estimates it.

    CodeCarbon reads RAPL, NVML or Apple powermetrics where it can and otherwise falls back to its own
    estimates (a TDP table for the CPU model, a W-per-GB rule for RAM); its log says which. It runs a
    background thread measuring every ``measure_power_secs``. Nothing is sent anywhere and no file is
    written (``save_to_file=False``). Needs the ``tune`` extra (``pip install 'lightning-addons[tune]'``).

    Args:
        country_iso_code: 3-letter country code of CodeCarbon's carbon intensity (energy does not use it).
        measure_power_secs: seconds between CodeCarbon's power measurements (> 0).
        tracking_mode: ``"machine"`` (whole machine) or ``"process"`` (this process's share).
        log_level: CodeCarbon's logger level.

    Raises:
        ValueError: a bad ``measure_power_secs`` or ``tracking_mode``.
        ModuleNotFoundError: ``codecarbon`` is not installed (the message names the extra).

    Examples:
        >>> CodeCarbonMeter.source
        'codecarbon'
    """

    source = "codecarbon"

    def __init__(
        self,
        country_iso_code: str = "USA",
        measure_power_secs: float = 1.0,
        tracking_mode: str = "process",
        log_level: str = "error",
    ) -> None:
        if not measure_power_secs > 0:
            raise ValueError(f"`measure_power_secs` must be > 0, got {measure_power_secs!r}.")
        if tracking_mode not in ("machine", "process"):
            raise ValueError(f"`tracking_mode` must be one of ['machine', 'process'], got {tracking_mode!r}.")
        from lightning_addons._imports import require

        self._cc = require("codecarbon", feature="The CodeCarbon energy source")
        self.country_iso_code, self.measure_power_secs = country_iso_code, float(measure_power_secs)
        self.tracking_mode, self.log_level = tracking_mode, log_level
        self._tracker = None
        self._final: float | None = None

    def start(self) -> None:
        self._final = None
        self._tracker = self._cc.OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            measure_power_secs=self.measure_power_secs,
            tracking_mode=self.tracking_mode,
            log_level=self.log_level,
            save_to_file=False,
        )
        self._tracker.start()

    def read(self) -> float:
        """Joules since ``start`` (CodeCarbon's running total, brought up to date by ``flush``)."""
        if self._final is not None:
            return self._final
        if self._tracker is None:
            raise RuntimeError("CodeCarbonMeter.read() before start().")
        self._tracker.flush()
        return float(self._tracker._total_energy.kWh) * 3.6e6  # no public running total in codecarbon 3

    def stop(self) -> float:
        """Stop CodeCarbon's tracker and return the joules of the whole run (its final emissions data)."""
        if self._final is None:
            if self._tracker is None:
                raise RuntimeError("CodeCarbonMeter.stop() before start().")
            self._tracker.stop()
            self._final = float(self._tracker.final_emissions_data.energy_consumed) * 3.6e6
            self._tracker = None
        return self._final


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
