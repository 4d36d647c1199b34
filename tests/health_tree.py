"""A fake sysfs tree for the health readers: what a hot, throttled Raspberry Pi on `ondemand` exposes."""

from __future__ import annotations

from pathlib import Path

from edgeprune.devices import health


def fake_board_tree(root: Path, mhz: tuple[int, int] = (1500, 1800), throttled: str = "50005") -> Path:
    """cpu0 on ondemand at `mhz[0]`, cpu1 on performance at `mhz[1]`, one zone at 82 °C, the Pi's throttle word,
    a devfreq GPU at 921.6 MHz."""
    files = {
        f"{health.CPU}/online": "0-1",
        f"{health.CPU}/cpu0/cpufreq/scaling_governor": "ondemand",
        f"{health.CPU}/cpu0/cpufreq/scaling_cur_freq": str(mhz[0] * 1000),
        f"{health.CPU}/cpu0/cpufreq/scaling_max_freq": "1800000",
        f"{health.CPU}/cpu1/cpufreq/scaling_governor": "performance",
        f"{health.CPU}/cpu1/cpufreq/scaling_cur_freq": str(mhz[1] * 1000),
        f"{health.CPU}/cpu1/cpufreq/scaling_max_freq": "1800000",
        f"{health.THERMAL}/thermal_zone0/temp": "82150",
        f"{health.THERMAL}/thermal_zone0/type": "cpu-thermal",
        f"{health.THERMAL}/cooling_device0/type": "fan",
        f"{health.DEVFREQ}/17000000.gpu/cur_freq": "921600000",
        health.PI_THROTTLED: throttled,
    }
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    return root
