from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.research import diagnose


def test_diagnosis_reads_repeats_fallbacks_stagnation_and_coverage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'd.db'}"
    study = optuna.create_study(storage=url, study_name="r/cfg-1/branin/seed-0")
    for key, value in ((_attrs.RUN, "r"), (_attrs.KIND, "inner"), (_attrs.ARM, "cfg-1")):
        study.set_user_attr(key, value)
    space = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
    # x explores, y is stuck at 0.5; trial 3 repeats trial 2; the last 3 trials do not improve.
    rows = [(0.1, 5.0, "llm"), (0.5, 4.0, "llm"), (0.9, 3.0, "llm"), (0.9, 3.0, "llm"),
            (0.3, 6.0, "fallback"), (0.7, 7.0, "llm")]  # fmt: skip
    for x, value, source in rows:
        t = study.ask()
        study._storage.set_trial_param(t._trial_id, "x", x, space["x"])
        study._storage.set_trial_param(t._trial_id, "y", 0.5, space["y"])
        t.set_user_attr(_attrs.SOURCE, source)
        t.set_user_attr(
            _attrs.MECHANISMS, {"tabu": {"hooks": {"review": 2}, "changed": 1, "errors": []}}
        )
        study.tell(t, value)
    other = optuna.create_study(storage=url, study_name="r/random/branin/seed-0")
    other.set_user_attr(_attrs.RUN, "r")
    other.set_user_attr(_attrs.ARM, "random")
    d = diagnose(url, "r")
    assert d.n_studies == 1 and d.n_trials == 6
    assert d.repeat_share == 1 / 6
    assert d.fallback_share == 1 / 6
    assert d.stagnation == 3
    assert d.unexplored == ["y"]
    assert d.mechanisms == {"tabu": {"calls": 12, "changed": 6, "errors": 0}}
    assert any("repeat an earlier configuration" in line for line in d.lines())
