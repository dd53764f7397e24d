"""Energy meters: RAPL against a fake sysfs tree, the CPU-time estimate, the EnergyMeter callback."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_addons.callbacks import EnergyMeter
from lightning_addons.energy import CPUTimeMeter, RAPLMeter, best_meter


def _fake_rapl(root, pkg_uj=1_000_000, dram_uj=500_000, max_uj=10_000_000):
    pkg = root / "intel-rapl:0"
    dram = pkg / "intel-rapl:0:0"
    core = pkg / "intel-rapl:0:1"
    for d, name, e in ((pkg, "package-0", pkg_uj), (dram, "dram", dram_uj), (core, "core", 123)):
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{e}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return pkg, dram


def test_rapl_meter_sums_package_and_dram_and_handles_wraparound(tmp_path):
    pkg, dram = _fake_rapl(tmp_path)
    meter = RAPLMeter(tmp_path)
    assert meter.source == "rapl" and [d.name for d in meter.domains] == ["intel-rapl:0", "intel-rapl:0:0"]
    meter.start()
    (pkg / "energy_uj").write_text("3000000\n")  # +2 J
    (dram / "energy_uj").write_text("1500000\n")  # +1 J
    assert meter.read() == pytest.approx(3.0)
    (pkg / "energy_uj").write_text("500000\n")  # wrapped: +(10 - 3 + 0.5) J
    assert meter.read() == pytest.approx(3.0 + 7.5)
    assert best_meter(prefer_gpu=False, rapl_root=tmp_path).source == "rapl"


def test_rapl_missing_falls_back_to_labelled_cpu_time_estimate(tmp_path):
    assert not RAPLMeter.available(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="no readable RAPL package domain"):
        RAPLMeter(tmp_path)
    meter = best_meter(prefer_gpu=False, rapl_root=tmp_path, watts_per_core=20.0)
    assert meter.source == "cpu-time-estimate"
    meter.start()
    x = torch.randn(300, 300)
    for _ in range(60):
        x = torch.tanh(x @ x)
    j = meter.read()
    cpu = CPUTimeMeter(1.0)
    assert j > 0 and meter.watts_per_core == 20.0 and cpu.source == "cpu-time-estimate"
    with pytest.raises(ValueError, match="`watts_per_core` must be > 0, got 0"):
        CPUTimeMeter(0)


def test_energy_meter_callback_logs_energy_with_source_and_survives_state_round_trip(tmp_path):
    _fake_rapl(tmp_path)
    meter = EnergyMeter(source="auto", rapl_root=str(tmp_path / "absent"), watts_per_core=15.0)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=1,
        callbacks=[meter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert meter.source == "cpu-time-estimate"
    assert meter.energy_joules > 0 and meter.fit_seconds > 0
    assert float(trainer.callback_metrics["energy_joules"]) == pytest.approx(meter.energy_joules, rel=0.5)
    state = meter.state_dict()
    restored = EnergyMeter()
    restored.load_state_dict(state)
    assert restored.energy_joules == pytest.approx(state["energy_joules"])
    rapl = EnergyMeter(source="rapl", rapl_root=str(tmp_path))
    pl.Trainer(
        max_steps=1,
        callbacks=[rapl],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(BoringModel())
    assert rapl.source == "rapl" and rapl.energy_joules == 0.0  # the fake counters did not move


def test_energy_meter_rejects_unknown_source():
    with pytest.raises(
        ValueError,
        match=r"`source` must be one of \['auto', 'nvml', 'rapl', 'codecarbon', 'cpu-time-estimate'\], got 'ipmi'",
    ):
        EnergyMeter(source="ipmi")


def test_nvml_meter_reads_total_energy_deltas_through_pynvml(monkeypatch):
    import types

    from lightning_addons.energy import NVMLMeter

    counters = {0: 5_000, 1: 9_000}  # millijoules
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counters[h],
    )
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    meter = NVMLMeter()
    meter.start()
    counters[0] += 2_500
    counters[1] += 500
    assert meter.source == "nvml" and meter.read() == pytest.approx(3.0)
    assert best_meter(prefer_gpu=True).source == "nvml"
    fake.nvmlDeviceGetCount = lambda: 0
    with pytest.raises(RuntimeError, match="NVML found no GPU"):
        NVMLMeter()


class _FakeTracker:
    """CodeCarbon's OfflineEmissionsTracker surface that CodeCarbonMeter uses, with scripted kWh."""

    made: list[_FakeTracker] = []

    def __init__(self, **kwargs):
        import types

        self.kwargs, self.running = kwargs, False
        self._total_energy = types.SimpleNamespace(kWh=0.0)
        self.final_emissions_data = None
        _FakeTracker.made.append(self)

    def start(self):
        self.running = True

    def flush(self):
        self._total_energy.kWh += 1e-6  # 3.6 J per measurement

    def stop(self):
        import types

        self.flush()
        self.running = False
        self.final_emissions_data = types.SimpleNamespace(energy_consumed=self._total_energy.kWh)


def test_codecarbon_meter_converts_the_trackers_kwh_to_joules_and_stops_it(monkeypatch):
    import types

    from lightning_addons.energy import CodeCarbonMeter

    _FakeTracker.made.clear()
    fake = types.SimpleNamespace(OfflineEmissionsTracker=_FakeTracker)
    monkeypatch.setitem(__import__("sys").modules, "codecarbon", fake)
    meter = CodeCarbonMeter(country_iso_code="DEU", measure_power_secs=2)
    meter.start()
    tracker = _FakeTracker.made[-1]
    assert tracker.kwargs == {
        "country_iso_code": "DEU",
        "measure_power_secs": 2.0,
        "tracking_mode": "process",
        "log_level": "error",
        "save_to_file": False,
    }
    assert meter.read() == pytest.approx(3.6) and meter.read() == pytest.approx(7.2)
    assert meter.stop() == pytest.approx(10.8) and not tracker.running
    assert meter.read() == meter.stop() == pytest.approx(10.8)  # stopped: the final figure stays


def test_energy_meter_callback_records_codecarbon_as_its_source(monkeypatch):
    import types

    _FakeTracker.made.clear()
    fake = types.SimpleNamespace(OfflineEmissionsTracker=_FakeTracker)
    monkeypatch.setitem(__import__("sys").modules, "codecarbon", fake)
    meter = EnergyMeter(source="codecarbon")
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[meter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert meter.source == "codecarbon" and meter.state_dict()["source"] == "codecarbon"
    assert meter.energy_joules == pytest.approx(3 * 3.6)  # one flush per epoch end, one at stop
    assert not _FakeTracker.made[-1].running


def test_codecarbon_source_without_the_package_names_the_extra(monkeypatch):
    from lightning_addons.energy import CodeCarbonMeter

    monkeypatch.setitem(__import__("sys").modules, "codecarbon", None)
    with pytest.raises(ModuleNotFoundError, match=r"'codecarbon'.*pip install 'lightning-addons\[tune\]'"):
        CodeCarbonMeter()
    with pytest.raises(
        ValueError, match=r"`tracking_mode` must be one of \['machine', 'process'\], got 'gpu'"
    ):
        CodeCarbonMeter(tracking_mode="gpu")
    with pytest.raises(ValueError, match=r"`measure_power_secs` must be > 0, got 0"):
        CodeCarbonMeter(measure_power_secs=0)


def test_codecarbon_meter_reads_the_real_library_on_this_machine():
    pytest.importorskip("codecarbon")
    from lightning_addons.energy import CodeCarbonMeter

    meter = CodeCarbonMeter(measure_power_secs=1)
    meter.start()
    _ = sum(i * i for i in range(1_000_000))
    mid = meter.read()
    final = meter.stop()
    assert meter.source == "codecarbon" and 0 <= mid <= final and final > 0
