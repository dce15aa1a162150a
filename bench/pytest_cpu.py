"""A pytest plugin: the CPU each test costs, in the pytest process and in the processes
it started and reaped (``getrusage`` self and children), one JSON line per test in
``$PYTEST_CPU_DIR/cpu-<pid>.jsonl`` (default ``/tmp``): ``[nodeid, self_s, children_s]``.
A module-scoped process is counted in the test after which it is reaped.

    PYTHONPATH=bench make test PYTEST_ARGS="-p pytest_cpu"
    python bench/pytest_cpu.py            # the sum by module, largest first
"""

from __future__ import annotations

import glob
import json
import os
import resource
import sys
from collections import defaultdict

import pytest

_DIR = os.environ.get("PYTEST_CPU_DIR", "/tmp")


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _cpu()
    yield
    after = _cpu()
    with open(os.path.join(_DIR, f"cpu-{os.getpid()}.jsonl"), "a") as out:
        out.write(json.dumps([item.nodeid, after[0] - before[0], after[1] - before[1]]) + "\n")


def summary(directory: str = _DIR) -> list[tuple[str, float, float, int]]:
    """``(module, self_s, children_s, tests)`` summed over the run's files, largest first."""
    by_module: dict[str, list] = defaultdict(lambda: [0.0, 0.0, 0])
    for path in glob.glob(os.path.join(directory, "cpu-*.jsonl")):
        with open(path) as lines:
            for line in lines:
                nodeid, own, children = json.loads(line)
                row = by_module[nodeid.split("::")[0]]
                row[0] += own
                row[1] += children
                row[2] += 1
    return sorted(((m, *v) for m, v in by_module.items()), key=lambda r: -(r[1] + r[2]))


if __name__ == "__main__":
    rows = summary(sys.argv[1] if len(sys.argv) > 1 else _DIR)
    for module, own, children, tests in rows:
        print(f"{own:7.1f} self {children:7.1f} children {tests:5d} {module}")
    print(f"{sum(r[1] for r in rows):7.1f} self {sum(r[2] for r in rows):7.1f} children in all")
