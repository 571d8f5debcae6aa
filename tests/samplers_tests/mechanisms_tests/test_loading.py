from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import load_mechanism
from bilevel_optuna.samplers import load_mechanism_by_name
from bilevel_optuna.samplers import load_mechanism_from_source
from bilevel_optuna.samplers import load_mechanism_source
from bilevel_optuna.samplers import register_mechanism
from bilevel_optuna.samplers.mechanisms._loading import load_mechanisms
from bilevel_optuna.samplers.mechanisms._loading import source_hash

SOURCE = textwrap.dedent('''
    from optuna.distributions import FloatDistribution
    from bilevel_optuna.samplers import Mechanism, Review


    class NudgeUp(Mechanism):
        """Adds `shift` to x when the model proposes x < 0."""

        name = "nudge_up"
        version = "2"

        def __init__(self, *, shift: float = 1.0) -> None:
            if shift <= 0:
                raise ValueError(f"shift must be > 0 but got {shift}.")
            self.shift = shift

        @classmethod
        def search_space(cls):
            return {"shift": FloatDistribution(0.1, 2.0)}

        def prepare(self, context):
            context.notes.append("Prefer x >= 0.")

        def review(self, candidate, context):
            if candidate["x"] < 0:
                return Review.replace({"x": candidate["x"] + self.shift}, "x was negative")
            return Review.accept()
    ''')
SPACE = {"x": FloatDistribution(-5.0, 5.0)}


def _run(mechanism: object, n_trials: int = 3) -> optuna.Study:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": -1.0 - i * 0.1}))
    sampler = LLMSampler(preset="level0", model=model, search_space=SPACE, mechanisms=[mechanism])
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=n_trials)
    return study


def test_source_text_loads_with_its_hash_and_runs() -> None:
    cls = load_mechanism_source(SOURCE)
    assert cls.name == "nudge_up"
    assert cls.source_sha256 == source_hash(SOURCE)
    study = _run(load_mechanism_from_source(SOURCE))
    for t in study.trials:
        assert t.params["x"] >= -0.3
        record = t.user_attrs[_attrs.MECHANISMS]["nudge_up"]
        assert record["hooks"] == {"prepare": 1, "review": 1}
        assert record["changed"] == 2  # a note added and a candidate replaced
        assert t.user_attrs[_attrs.SOURCE] == "mechanism"


def test_file_path_loads(tmp_path: Path) -> None:
    path = tmp_path / "nudge.py"
    path.write_text(SOURCE)
    mechanism = load_mechanism(str(path), shift=2.0)
    assert type(mechanism).name == "nudge_up" and mechanism.shift == 2.0


def test_class_instance_and_pair_forms() -> None:
    cls = load_mechanism_source(SOURCE)
    assert load_mechanism(cls).shift == 1.0
    assert load_mechanism((cls, {"shift": 0.5})).shift == 0.5
    instance = cls(shift=0.3)
    assert load_mechanism(instance) is instance


def test_registered_name_loads() -> None:
    @register_mechanism
    class Quiet(Mechanism):
        name = "quiet_for_test"

    assert isinstance(load_mechanism("quiet_for_test"), Quiet)


@pytest.mark.parametrize(
    "spec,params,fragment",
    [
        ("no_such_mechanism", {}, "Unknown mechanism 'no_such_mechanism'; valid names are"),
        ("/nowhere/x.py", {}, "does not exist"),
        ("import os\nraise RuntimeError('broken')\n", {}, "failed to import: RuntimeError"),
        ("x = 1\ny = 2\n", {}, "exactly one Mechanism subclass"),
        (SOURCE, {"radius": 1.0}, "takes no parameter ['radius']"),
    ],
)
def test_bad_mechanisms_get_clear_errors(spec: str, params: dict, fragment: str) -> None:
    load = load_mechanism_from_source if "\n" in spec else load_mechanism
    with pytest.raises(ConfigurationError) as info:
        load(spec, **params)
    assert fragment in str(info.value)


def test_duplicate_names_are_refused() -> None:
    cls = load_mechanism_source(SOURCE)
    with pytest.raises(ConfigurationError, match="more than once"):
        load_mechanisms([cls, cls])


# ------------------------------------------------- names are data (issue 22, finding 1)
def _malicious_name(marker: Path) -> str:
    return (
        f"x = 1\nopen({str(marker)!r}, 'w').write('ran')\n"
        "from bilevel_optuna.samplers import Mechanism\nclass E(Mechanism):\n    name = 'e'\n"
    )


def test_control_source_text_given_for_a_name_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    load_mechanism_source(_malicious_name(marker))  # what the newline sniffing did with it
    assert marker.exists()


def test_loading_by_name_never_reads_a_name_as_source_or_path(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    for spec in (_malicious_name(marker), str(path)):
        with pytest.raises(ConfigurationError, match="Unknown mechanism"):
            load_mechanism_by_name(spec)
    assert not marker.exists()


def test_source_text_for_a_name_still_loads_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="load_mechanism_from_source"):
        mechanism = load_mechanism(SOURCE, shift=0.5)
    assert type(mechanism).name == "nudge_up" and mechanism.shift == 0.5


@pytest.mark.parametrize("name", ["a b", "x\nimport os", "../up", "m.py", "", "é"])
def test_register_refuses_a_name_that_is_not_an_identifier(name: str) -> None:
    cls = type("Odd", (Mechanism,), {"name": name})
    with pytest.raises(ConfigurationError, match="must match"):
        register_mechanism(cls)


def test_hook_that_raises_is_switched_off_and_recorded() -> None:
    class Broken(Mechanism):
        name = "broken"

        def review(self, candidate, context):  # type: ignore[no-untyped-def]
            raise KeyError("oops")

    study = _run(Broken, n_trials=2)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        record = t.user_attrs[_attrs.MECHANISMS]["broken"]
        assert record["off"] is True
        assert "review: KeyError" in record["errors"][0]
