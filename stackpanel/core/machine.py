"""What machine a figure was measured on: printed next to every benchmark result."""
from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python, system and load average."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def describe_machine() -> str:
    """One line: '2 cores, AMD EPYC, Python 3.11.7, Linux 6.1, load avg 0.8'."""
    m = machine_info()
    load = f", load avg {m['loadavg_1m']}" if "loadavg_1m" in m else ""
    return f"{m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, {m['system']}{load}"
