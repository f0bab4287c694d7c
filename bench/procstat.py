"""CPU seconds and memory of a running process, read from /proc (Linux).

`utime + stime` of /proc/<pid>/stat is the CPU the process (all its threads)
has used since it started; `VmHWM` of /proc/<pid>/status its peak resident
set, which the kernel keeps only while the process lives: read it before the
process is stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcSample:
    cpu_s: float
    rss_mib: float
    peak_rss_mib: float


def sample(pid: int) -> ProcSample | None:
    """The process's CPU and memory now; None if it is gone (or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    memory = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) / 1024  # kB to MiB
    return ProcSample(
        cpu_s=(utime + stime) / _CLOCK_TICKS,
        rss_mib=memory.get("VmRSS", 0.0),
        peak_rss_mib=memory.get("VmHWM", 0.0),
    )


def sample_all(pids: dict[str, int]) -> dict[str, ProcSample | None]:
    return {name: sample(pid) for name, pid in pids.items()}


def cpu_between(
    before: dict[str, ProcSample | None], after: dict[str, ProcSample | None]
) -> dict[str, float | None]:
    """CPU seconds each process used from one sample to the other."""
    used: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        used[name] = None if start is None or end is None else round(end.cpu_s - start.cpu_s, 3)
    return used
