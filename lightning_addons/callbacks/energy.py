"""EnergyMeter: measure the energy (joules) and wall time of ``fit`` with the best available meter."""

from __future__ import annotations

import time
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_addons.energy.meters import (
    DEFAULT_WATTS_PER_CORE,
    ENERGY_SOURCES,
    RAPL_ROOT,
    CodeCarbonMeter,
    CPUTimeMeter,
    EnergyMeterBase,
    NVMLMeter,
    RAPLMeter,
    best_meter,
)

SOURCES = ENERGY_SOURCES


class EnergyMeter(pl.Callback):
    """Measure the energy used by training and log it every epoch as ``energy_joules``.

    The meter is NVML on GPUs, Intel RAPL (``/sys/class/powercap``, package + DRAM) where readable,
    otherwise an *estimate* from the process CPU time x ``watts_per_core``; ``source="codecarbon"`` uses
    CodeCarbon's tracker instead (``tune`` extra; CPU + GPU + RAM, measured or estimated as CodeCarbon can).
    :attr:`source` says which; it is also logged once as a text line (rank 0). With several processes
    (DDP), each rank meters its own process and the logged value is the sum over ranks.

    Args:
        source: ``"auto"`` (best available) or force ``"nvml"``, ``"rapl"``, ``"codecarbon"``,
            ``"cpu-time-estimate"``.
        watts_per_core: per-core power of the CPU-time estimate (W).
        rapl_root: powercap folder (tests point it at a fake tree).
        log_name: metric name logged at each training epoch end.

    Raises:
        ValueError: unknown ``source``, ``watts_per_core <= 0``.
        FileNotFoundError / RuntimeError: a forced meter that is not available (at ``setup``).
        ModuleNotFoundError: ``source="codecarbon"`` without ``codecarbon`` installed (names the extra).

    Attributes:
        energy_joules: joules of the last (or running) fit.
        fit_seconds: wall seconds of the last (or running) fit.

    Examples:
        >>> import lightning.pytorch as pl
        >>> from lightning.pytorch.demos.boring_classes import BoringModel
        >>> meter = EnergyMeter(source="cpu-time-estimate")
        >>> trainer = pl.Trainer(max_steps=2, callbacks=[meter], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(BoringModel())
        >>> meter.source, meter.energy_joules >= 0
        ('cpu-time-estimate', True)
    """

    def __init__(
        self,
        source: Literal["auto", "nvml", "rapl", "codecarbon", "cpu-time-estimate"] = "auto",
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        rapl_root: str = RAPL_ROOT,
        log_name: str = "energy_joules",
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"`source` must be one of {list(SOURCES)}, got {source!r}.")
        if not watts_per_core > 0:
            raise ValueError(f"`watts_per_core` must be > 0, got {watts_per_core!r}.")
        self.requested_source = source
        self.watts_per_core = float(watts_per_core)
        self.rapl_root = rapl_root
        self.log_name = log_name
        self.energy_joules = 0.0
        self.fit_seconds = 0.0
        self.source = "none"
        self._meter: EnergyMeterBase | None = None
        self._offset_j = 0.0  # energy of earlier (resumed) runs
        self._offset_s = 0.0
        self._t0 = 0.0

    def _make_meter(self, use_gpu: bool) -> EnergyMeterBase:
        if self.requested_source == "auto":
            return best_meter(
                prefer_gpu=use_gpu, rapl_root=self.rapl_root, watts_per_core=self.watts_per_core
            )
        if self.requested_source == "nvml":
            return NVMLMeter()
        if self.requested_source == "rapl":
            return RAPLMeter(self.rapl_root)
        if self.requested_source == "codecarbon":
            return CodeCarbonMeter()
        return CPUTimeMeter(self.watts_per_core)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._meter is None:
            self._meter = self._make_meter(trainer.strategy.root_device.type == "cuda")
            self.source = self._meter.source

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._meter is None:  # pragma: no cover - setup always ran
            self.setup(trainer, pl_module, "fit")
        self._meter.start()
        self._t0 = time.perf_counter()
        rank_zero_info(f"EnergyMeter: source={self.source}")

    def _update(self) -> None:
        if self._meter is not None:
            self.energy_joules = self._offset_j + self._meter.read()
            self.fit_seconds = self._offset_s + time.perf_counter() - self._t0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._update()
        pl_module.log(
            self.log_name,
            float(self.energy_joules),
            reduce_fx="sum",
            sync_dist=True,
            on_step=False,
            on_epoch=True,
        )

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._meter is not None:
            self.energy_joules = self._offset_j + self._meter.stop()
            self.fit_seconds = self._offset_s + time.perf_counter() - self._t0
        self._meter = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._meter is not None:  # stop a meter's background thread (CodeCarbon) on a failed fit
            self._update()
            self._meter.stop()
            self._meter = None

    def state_dict(self) -> dict[str, Any]:
        self._update()
        return {
            "energy_joules": float(self.energy_joules),
            "fit_seconds": float(self.fit_seconds),
            "source": self.source,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset_j = float(state_dict.get("energy_joules", 0.0))
        self._offset_s = float(state_dict.get("fit_seconds", 0.0))
        self.energy_joules, self.fit_seconds = self._offset_j, self._offset_s
