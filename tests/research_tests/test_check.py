"""The whole gate: static checks, then the smoke run in the guarded process."""

from __future__ import annotations

from pathlib import Path

import pytest
import sources as S
from guard import needs_boundary

from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits

pytestmark = needs_boundary


def test_good_source_is_accepted_after_calling_every_hook() -> None:
    result = check_source(S.GOOD)
    assert result.accepted, result.reasons
    assert result.stage == "accepted"
    assert result.name == "far_from_history"
    assert result.hooks == ["prepare", "review", "choose", "after_trial"]
    assert result.hook_calls == {"prepare": 1, "review": 3, "choose": 1, "after_trial": 1}
    assert "radius" in result.space
    assert result.summary().startswith("accepted far_from_history")


@pytest.mark.parametrize(
    ("name", "stage", "reason"),
    [
        ("SYNTAX_ERROR", "parse", "SyntaxError"),
        ("WRONG_INTERFACE", "contract", "review must be"),
        ("FORBIDDEN_IMPORT", "policy", "import of 'os'"),
        ("OBFUSCATED_IMPORT", "policy", "__subclasses__"),
        ("ENDLESS_LOOP", "smoke", "timed out"),
        ("MEMORY_HOG", "smoke", "MemoryError"),
        ("SYSTEM_EXIT", "smoke", "SystemExit: 3"),
        ("KEYBOARD_INTERRUPT", "smoke", "review: KeyboardInterrupt"),
    ],
)
def test_bad_source_is_rejected_for_the_right_reason(
    name: str, stage: str, reason: str, tmp_path: Path
) -> None:
    target = tmp_path / "pwned"
    # The memory hog gets time enough to reach its limit on a loaded machine; the loop does not.
    timeout = 30.0 if name == "MEMORY_HOG" else 2.0
    result = check_source(
        S.fill(getattr(S, name), path=target), limits=Limits(hook_timeout=timeout)
    )
    assert not result.accepted
    assert result.stage == stage
    assert any(reason in r for r in result.reasons), result.reasons
    assert not target.exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("FORK", "forbidden system call"),
        ("WRITE_FILE", "No such file or directory"),
        ("OPEN_SOCKET", "forbidden system call"),
        ("HARD_EXIT", "exited with status 7"),
    ],
)
def test_attacks_past_the_prefilter_are_stopped_by_the_boundary(
    name: str, reason: str, tmp_path: Path, listener  # type: ignore[no-untyped-def]
) -> None:
    target = tmp_path / "pwned"
    source = S.fill(getattr(S, name), path=target, port=listener.port)
    result = check_source(source, _prefilter=False)
    assert not result.accepted and result.stage == "smoke"
    assert any(reason in r for r in result.reasons), result.reasons
    assert not target.exists()
    assert listener.connections == 0


def test_the_gate_refuses_code_when_a_layer_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from bilevel_optuna.research import _check

    monkeypatch.setattr(
        _check, "boundary_problems", lambda layers: ["bubblewrap is not installed"]
    )
    result = check_source(S.GOOD)
    assert not result.accepted and result.stage == "boundary"
    assert "not run without its boundary" in result.reasons[0]


def test_a_hook_returning_the_wrong_type_is_rejected() -> None:
    source = (
        "from bilevel_optuna.samplers import Mechanism\nclass W(Mechanism):\n    name = 'wrong_type'\n"
        "    def review(self, candidate, context):\n        return True\n"
    )
    result = check_source(source, layers=Layers())
    assert not result.accepted and result.stage == "smoke"
    assert "must return a Review" in result.reasons[0]


def test_params_outside_the_space_are_rejected() -> None:
    source = (
        "from bilevel_optuna.samplers import Mechanism\nclass O(Mechanism):\n    name = 'outside'\n"
        "    def prepare(self, context):\n        context.params = {'nope': 1}\n"
    )
    result = check_source(source)
    assert not result.accepted and "outside the search space" in result.reasons[0]


def test_a_stored_study_given_for_the_smoke_run_is_not_changed(tmp_path: Path) -> None:
    import optuna

    from bilevel_optuna.research._check import smoke_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    stored = optuna.create_study(storage=url, study_name="recorded")
    stored.add_trials(smoke_study().get_trials())
    before = len(stored.trials)
    result = check_source(S.GOOD, study=optuna.load_study(study_name="recorded", storage=url))
    assert result.accepted
    assert len(optuna.load_study(study_name="recorded", storage=url).trials) == before
