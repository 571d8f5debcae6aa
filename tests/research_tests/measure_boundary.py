"""Measurements quoted in docs/security.md (not a test): idle CPU of a guarded mechanism and the
cost of a child that keeps dying or hangs. Run from the repository root:

    python tests/research_tests/measure_boundary.py idle 20
    python tests/research_tests/measure_boundary.py dying
    python tests/research_tests/measure_boundary.py hanging 20
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sources as S  # noqa: E402
from helpers import context  # noqa: E402
from helpers import proxy  # noqa: E402

from bilevel_optuna.research._check import check_source  # noqa: E402
from bilevel_optuna.research._proxy import guarded_class  # noqa: E402
from bilevel_optuna.research._proxy import GuardedHookError  # noqa: E402
from bilevel_optuna.research._sandbox import Layers  # noqa: E402
from bilevel_optuna.research._sandbox import Limits  # noqa: E402

HANG = (
    "from bilevel_optuna.samplers import Mechanism\nclass H(Mechanism):\n    name = 'hang'\n"
    "    while True:\n        pass\n    def prepare(self, context):\n        pass\n"
)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, from /proc."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text()
                todo += [int(c) for c in children.split()]
        except FileNotFoundError:
            pass
    return total


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle(seconds: float) -> None:
    before = self_cpu()
    time.sleep(seconds)
    base = self_cpu() - before
    result = check_source(S.GOOD)
    cls = guarded_class(
        S.GOOD,
        name="good_00000000",
        hooks=result.hooks,
        space=result.space,
        sha256=result.sha256,
        declared_name=result.name,
    )
    mechanism = cls()
    mechanism.prepare(context())
    assert mechanism._process is not None and mechanism._process.pid is not None
    pid = mechanism._process.pid
    before, child_before = self_cpu(), tree_cpu(pid)
    time.sleep(seconds)
    guarded, child = self_cpu() - before, tree_cpu(pid) - child_before
    mechanism.close()
    print(
        f"over {seconds:g} s idle: parent without a guarded mechanism {base * 1000:.1f} ms CPU; "
        f"with one started {guarded * 1000:.1f} ms; its child's tree {child * 1000:.1f} ms"
    )


def calls(source: str, limits: Limits, n: int, pause: float) -> None:
    mechanism = proxy(source, Layers(), limits)
    for i in range(n):
        start = time.perf_counter()
        message = "ok"
        try:
            mechanism.prepare(context())
        except GuardedHookError as err:
            message = str(err)[:70]
        took = time.perf_counter() - start
        print(f"call {i + 1}: {took:.2f} s  starts={mechanism.starts}  {message}")
        time.sleep(pause)  # a trial's worth of other work
    mechanism.close()


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "idle":
        idle(float(sys.argv[2]) if len(sys.argv) > 2 else 20.0)
    elif what == "dying":
        calls(S.HARD_EXIT, Limits(), 8, 1.5)
    elif what == "hanging":
        start = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
        calls(HANG, Limits(start_timeout=start), 6, 8.0)
    else:
        raise SystemExit(__doc__)
