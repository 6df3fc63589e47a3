"""Facts about the host machine for device fingerprints (read, never guessed)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_governor() -> str | None:
    """The cpufreq governor of CPU 0, where the kernel exposes it."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def host_facts() -> dict[str, object]:
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        "cpu_governor": cpu_governor(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
    }
