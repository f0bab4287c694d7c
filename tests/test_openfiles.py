"""The open-file limit, raised in a child process so the suite's own stays as it is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")

PROBE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from cronsvc.openfiles import ensure_open_files
files = ensure_open_files(int(sys.argv[3]))
print(json.dumps({"before": files.before, "now": files.now, "needed": files.needed,
                  "enough": files.enough,
                  "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
"""


def probe(soft: int, hard: int, connections: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(soft), str(hard), str(connections)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def test_a_low_soft_limit_is_raised_to_fit_the_webhook_pool() -> None:
    if hard_limit() < 2048:
        pytest.skip("this machine's hard open-file limit is below 2048")

    result = probe(256, 2048, 1024)

    assert result == {"before": 256, "now": 1280, "needed": 1280, "enough": True, "soft": 1280}


def test_the_limit_is_raised_only_as_far_as_the_hard_limit_and_said_to_be_short() -> None:
    result = probe(256, 512, 1024)

    assert result == {"before": 256, "now": 512, "needed": 1280, "enough": False, "soft": 512}


def test_a_limit_already_high_enough_is_left_alone() -> None:
    if hard_limit() < 4096:
        pytest.skip("this machine's hard open-file limit is below 4096")

    result = probe(4096, 4096, 1024)

    assert result == {"before": 4096, "now": 4096, "needed": 1280, "enough": True, "soft": 4096}
