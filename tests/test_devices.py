"""Device monitoring: psutil figures everywhere, NVML figures through a stand-in ``pynvml`` (the real module
needs an NVIDIA driver), the samples in ``metrics.jsonl``, and the report's device table and figure."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from mswelu.base import devices
from mswelu.monitor import device_frame, device_summary, format_devices, plot_devices

GB = 1024**3


class _Err(Exception):
    pass


def fake_nvml(gpus: list[dict], init_fails: bool = False) -> types.ModuleType:
    """A stand-in for ``pynvml`` answering the calls :class:`mswelu.base.devices.Nvml` makes, for ``gpus``
    (util %, used / total bytes, temp C, power mW or None for a GPU without a power sensor)."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = _Err
    nv.NVML_TEMPERATURE_GPU = 0
    nv.calls = []

    def init() -> None:
        if init_fails:
            raise _Err("Driver Not Loaded")

    def handle(i: int) -> dict:
        return gpus[i]

    def power(h: dict) -> int:
        if h["power_mw"] is None:
            raise _Err("Not Supported")
        return h["power_mw"]

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: nv.calls.append("shutdown")
    nv.nvmlDeviceGetCount = lambda: len(gpus)
    nv.nvmlDeviceGetHandleByIndex = handle
    nv.nvmlDeviceGetHandleByUUID = lambda u: next(g for g in gpus if g["uuid"] == u)
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=h["util"], memory=0)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=h["used"], total=h["total"])
    nv.nvmlDeviceGetTemperature = lambda h, kind: h["temp"]
    nv.nvmlDeviceGetPowerUsage = power
    return nv


GPUS = [
    dict(uuid="GPU-a", name="H200", util=97, used=40 * GB, total=141 * GB, temp=65, power_mw=612_000),
    dict(uuid="GPU-b", name=b"H200", util=3, used=1 * GB, total=141 * GB, temp=31, power_mw=None),
]


def test_nvml_figures_per_visible_gpu(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(GPUS))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = devices.Nvml()
    assert nvml.error is None and len(nvml.handles) == 2
    got = nvml.read()
    assert got == {
        "gpu0_util": 97.0,
        "gpu0_mem_used_gb": 40.0,
        "gpu0_mem_total_gb": 141.0,
        "gpu0_temp_c": 65.0,
        "gpu0_power_w": 612.0,
        "gpu1_util": 3.0,
        "gpu1_mem_used_gb": 1.0,
        "gpu1_mem_total_gb": 141.0,
        "gpu1_temp_c": 31.0,  # no power sensor: that figure only is missing
    }
    assert format_devices(got) == "gpu0 97% 40.0/141.0G 65C 612W  gpu1 3% 1.0/141.0G 31C"
    # only the GPUs this process sees, in its CUDA order (an index or a UUID)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b")
    assert devices.Nvml().read()["gpu0_util"] == 3.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [v for k, v in devices.Nvml().read().items() if k.endswith("_util")] == [3.0, 97.0]
    nvml.close()
    assert sys.modules["pynvml"].calls == ["shutdown"]


def test_no_driver_means_no_gpu_figures(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(GPUS, init_fails=True))
    nvml = devices.Nvml()
    assert nvml.read() == {} and "Driver Not Loaded" in nvml.error
    figures = devices.read_devices(nvml)
    assert set(figures) == {"cpu_percent", "rss_gb", "sys_mem_used_gb", "sys_mem_total_gb"}
    assert 0 < figures["rss_gb"] < figures["sys_mem_total_gb"]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert devices.Nvml().error == "nvidia-ml-py is not installed"


def test_the_sampler_measures_off_the_calling_thread(monkeypatch) -> None:
    import threading
    import time

    seen = []
    real = devices.read_devices

    def spy(*a, **k):
        seen.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(devices, "read_devices", spy)
    sampler = devices.DeviceSampler(0.02, gpus=False).start()
    time.sleep(0.3)
    sampler.stop()
    samples = sampler.drain()
    assert len(samples) >= 3 and set(seen) == {"mswelu-device-sampler"}
    assert [s["time"] for s in samples] == sorted(s["time"] for s in samples)
    assert sampler.drain() == []
    with pytest.raises(ValueError, match="interval"):
        devices.DeviceSampler(0)


def test_a_tiny_run_records_device_samples_with_gpus(tmp_path, tiny_train_config, monkeypatch) -> None:
    """The training loop writes the sampler's records into metrics.jsonl (GPU figures from the stand-in);
    the training and evaluation records are what they were without them."""
    from mswelu.train import train

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(GPUS[:1]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "run"
    train({**tiny_train_config, "out": str(out), "monitor_every": 0.05})
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    samples = [r for r in records if "device" in r]
    assert samples, "no device samples"
    assert all(r["device"]["gpu0_util"] == 97.0 and r["device"]["rss_gb"] > 0 for r in samples)
    assert all(set(r) == {"step", "tokens", "time", "device"} for r in samples)
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)  # in step order
    assert len([r for r in records if "loss" in r]) == tiny_train_config["max_steps"]
    frame = device_frame(records)
    assert len(frame) == len(samples) and frame["time_s"].iloc[0] == 0.0
    assert {"cpu_percent", "rss_gb", "gpu0_util", "gpu0_power_w"} <= set(frame.columns)
    table = device_summary(frame)
    assert table.loc["gpu0_mem_used_gb", "max"] == 40.0
    fig = plot_devices(frame, title="run")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["process CPU (%, 100 = one core)", "memory (GB)"] and "GPU power (W)" in titles


def test_monitor_every_setting(tmp_path, tiny_train_config) -> None:
    from mswelu.train import config_from_args, train
    from mswelu.training.config import TrainConfig

    assert TrainConfig().monitor_interval() == 10.0 and TrainConfig(monitor_every=0).monitor_interval() == 0
    assert config_from_args(["--monitor-every", "2.5"]).monitor_every == 2.5
    with pytest.raises(ValueError, match="monitor_every must be >= 0"):
        TrainConfig(monitor_every=-1).validate()
    out = tmp_path / "off"
    train({**tiny_train_config, "out": str(out), "monitor_every": 0})
    assert not [x for x in (out / "metrics.jsonl").read_text().splitlines() if '"device"' in x]
    assert device_frame([]).empty and plot_devices(device_frame([])) is not None


def test_default_run_has_one_sample_at_least(tmp_path, tiny_train_config) -> None:
    """However short the run, it records its devices once (when its loop ends)."""
    from mswelu.train import train

    out = tmp_path / "default"
    cfg = {k: v for k, v in tiny_train_config.items() if k != "monitor_every"}
    train({**cfg, "out": str(out)})
    samples = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"device"' in x]
    assert len(samples) >= 1 and samples[-1]["step"] == tiny_train_config["max_steps"]
    assert Path(out / "final").is_dir()
