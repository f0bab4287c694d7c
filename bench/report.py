"""What every benchmark result carries: the machine, the versions, the
command; and how results are written out."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("cronsvc", "aiohttp", "uvloop", "redis", "pymongo", "croniter", "nx-27017")


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "command": shlex.join(["python", "-m", *_module_argv()]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU, {memory_gib:.0f} GiB, {platform.platform()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "packages": versions,
    }


def _module_argv() -> list[str]:
    main = sys.modules["__main__"]
    module = getattr(main, "__spec__", None)
    return [module.name if module else sys.argv[0], *sys.argv[1:]]


def emit(result: dict[str, Any], json_path: Path | None) -> None:
    """The result as JSON on stdout, and in `json_path` if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
