"""Keep the receiver and the service apart on this machine's CPUs.

Unpinned, the kernel at times runs the receiver on the sender's core while
a burst goes out (it wakes the receiver where the sender runs), and that
burst takes 2-3x as long (measured with `bench.run --jobs 100`: one burst in
about five took 9-25 ms rather than 4-6). `--pin` puts this process, the
receiver, on the last CPU and the service's threads on the others, so a
figure shows the service's own speed; unpinned figures show what a shared
machine gives. Linux only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def pin_apart(service_pids: Iterable[int]) -> tuple[set[int], set[int]]:
    """Pin this process to the last CPU it may use and every thread of
    `service_pids` to the rest; answer (this process's CPUs, the service's).
    Raises RuntimeError with fewer than two CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise RuntimeError(f"--pin needs two CPUs, this process may use {len(cpus)}")
    mine, theirs = {cpus[-1]}, set(cpus[:-1])
    for pid, cpu_set in [(os.getpid(), mine)] + [(pid, theirs) for pid in service_pids]:
        for thread in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(thread), cpu_set)
    return mine, theirs
