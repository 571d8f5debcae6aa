"""What the boundary is built of: the layers that work here, the limits, bubblewrap's arguments."""

from __future__ import annotations

import pytest

from bilevel_optuna.research import _sandbox
from bilevel_optuna.research._sandbox import SAFE_ENV
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.research._sandbox import boundary_problems


def test_missing_layers_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _sandbox._bwrap_problem.cache_clear()
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: None)
    try:
        problems = boundary_problems()
        assert any("apt-get install bubblewrap" in p for p in problems)
        # Only the layers asked for are checked.
        assert not any("bubblewrap" in p for p in boundary_problems(Layers(namespaces=False)))
    finally:
        _sandbox._bwrap_problem.cache_clear()


def test_the_namespaces_see_no_environment_and_no_network() -> None:
    args = _sandbox.bwrap_args(Layers(), tmp_bytes=1024**2)
    for flag in ("--unshare-all", "--die-with-parent", "--clearenv", "--new-session"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    set_env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert set_env == SAFE_ENV
    assert args[args.index("--tmpfs") - 1] == str(1024**2)  # the private /tmp's size


def test_limits_become_rlimits() -> None:
    rlimits = Limits(memory_bytes=2**30, cpu_seconds=5, processes=3).rlimits()
    assert rlimits["RLIMIT_AS"] == 2**30
    assert rlimits["RLIMIT_CPU"] == 5
    assert rlimits["RLIMIT_NPROC"] == 3
    assert rlimits["RLIMIT_CORE"] == 0
    assert Layers().complete and not Layers(seccomp=False).complete
