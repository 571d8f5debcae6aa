"""The TOML specs (studies/specs/_toml.py): the shipped ones load, every error names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import BilevelSpec
from bilevel_optuna.studies import StudySpec
from bilevel_optuna.studies import load_spec

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "studies" / "specs"

GOOD = """
[run]
name = "t"
storage = "sqlite:///t.db"

[inner]
objectives = ["branin"]
heldout = ["rosenbrock"]
n_trials = 5
n_repeats = 2

[outer]
n_trials = 3

[outer.space]
temperature = {type = "float", low = 0.2, high = 1.0}
history_order = ["best", "chronological"]
template = "default"
mechanisms = ["tabu"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["demo.toml", "full.toml", "choose-default.toml"])
def test_shipped_specs_load(name: str) -> None:
    spec = load_spec(SHIPPED / name)
    assert isinstance(spec, BilevelSpec) and isinstance(spec.settings, BilevelSettings)


def test_every_shipped_toml_is_beside_the_loader() -> None:
    names = sorted(p.name for p in SHIPPED.glob("*.toml"))
    assert names == [
        "autoresearch.toml", "choose-default.toml", "demo.toml", "full.toml", "research-demo.toml"
    ]
    assert not list((REPO / "studies").glob("*.toml"))  # one place for the specs


def test_the_old_path_of_a_shipped_spec_still_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no studies/ folder here: the shipped spec of that name
    spec = load_spec("studies/demo.toml")
    assert isinstance(spec, BilevelSpec) and spec.path == SHIPPED / "demo.toml"
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_spec("elsewhere/demo.toml")


def test_autoresearch_spec_says_where_the_checkout_must_be() -> None:
    if (Path.home() / "autoresearch").is_dir():
        assert isinstance(load_spec(SHIPPED / "autoresearch.toml"), StudySpec)
        return
    with pytest.raises(ConfigurationError, match="autoresearch' is not a folder"):
        load_spec(SHIPPED / "autoresearch.toml")


def test_good_spec_gives_the_settings_objects(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert isinstance(spec, BilevelSpec)
    assert [o.name for o in spec.objectives] == ["branin"]
    assert [o.name for o in spec.heldout] == ["rosenbrock"]
    assert spec.run_name == "t" and spec.storage == "sqlite:///t.db"
    settings = spec.settings
    assert settings.inner.n_trials == 5 and settings.inner.n_repeats == 2
    assert settings.outer.n_trials == 3
    assert settings.outer.baselines == ("random", "tpe", "llm-level0")
    assert settings.model.model is None and settings.seed == 0
    space = settings.outer.space
    assert space is not None and space.settings["template"] == "default"
    assert list(space.mechanisms) == ["tabu"]
    # run_bilevel_study(**spec.kwargs) runs it: the new keywords, no deprecated one.
    kwargs = spec.kwargs
    assert sorted(kwargs) == ["heldout_objectives", "objective", "run_name", "settings", "storage"]
    assert kwargs["settings"] is settings


def test_the_old_keywords_of_a_spec_are_still_read_with_a_warning(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert isinstance(spec, BilevelSpec)
    with pytest.warns(FutureWarning, match=r"spec.settings.inner.n_trials"):
        assert spec.kwargs["n_inner_trials"] == 5
    with pytest.warns(FutureWarning, match=r"spec.settings.outer.space"):
        assert spec.kwargs["outer_space"] is spec.settings.outer.space
    with pytest.warns(FutureWarning):
        assert spec.kwargs["baselines"] == ["random", "tpe", "llm-level0"]
    with pytest.raises(KeyError):
        spec.kwargs["no_such_keyword"]


def test_the_model_table_and_the_run_keys_it_took_over(tmp_path: Path) -> None:
    run_keys = GOOD.replace(
        'name = "t"\n', 'name = "t"\nmodel = "uniform"\nmax_tokens_total = 9\n'
    )
    spec = load_spec(_write(tmp_path, run_keys))
    assert isinstance(spec, BilevelSpec)
    assert spec.settings.model.model == "uniform" and spec.settings.model.max_tokens_total == 9
    table = GOOD + '\n[model]\nmodel = "uniform"\ntoken_prices = [0.15, 0.6]\nmax_cost = 2.0\n'
    spec = load_spec(_write(tmp_path, table))
    assert isinstance(spec, BilevelSpec)
    assert spec.settings.model.token_prices == (0.15, 0.6) and spec.settings.model.max_cost == 2.0
    both = run_keys + '\n[model]\nmodel = "local"\n'
    with pytest.raises(ConfigurationError, match=r"`model` is in both \[run\] and \[model\]"):
        load_spec(_write(tmp_path, both))
    with pytest.raises(ConfigurationError, match=r"\[model\]: on_model_error must be one of"):
        load_spec(_write(tmp_path, GOOD + '\n[model]\non_model_error = "ignore"\n'))
    with pytest.raises(ConfigurationError, match=r"Unknown key\(s\) \['modle'\] in \[model\]"):
        load_spec(_write(tmp_path, GOOD + '\n[model]\nmodle = "local"\n'))


@pytest.mark.parametrize(
    "change,fragment",
    [
        (
            ("n_repeats = 2", "n_repets = 2"),
            "Unknown key(s) ['n_repets'] in [inner] ('n_repets': did you mean 'n_repeats'?)",
        ),
        (
            ("n_trials = 3", 'n_trials = "three"'),
            "`n_trials` in [outer] must be int but got str 'three'",
        ),
        (('objectives = ["branin"]', 'objectives = ["brannin"]'), "brannin"),
        (
            ('mechanisms = ["tabu"]', 'mechanisms = ["taboo"]'),
            "Unknown mechanism 'taboo'; valid names are",
        ),
        (('template = "default"', 'template = "verbose"'), "template must be one of"),
        (("[outer]", "[outter]"), "Unknown table(s) ['outter']"),
        (('name = "t"\n', ""), "[run] needs `name`"),
        (("n_trials = 3", "n_trials = true"), "must be int but got bool"),
        (("n_trials = 3", "n_trials = 0"), "[outer]: OuterSettings.n_trials must be a positive"),
        (("n_trials = 3", "n_trials = 3\ncost_objective = 1"), "must be bool or str but got int"),
        (
            ("n_trials = 3", 'n_trials = 3\ncost_objective = "money"'),
            "[outer]: OuterSettings.cost_objective must be False, True or one of",
        ),
        (("n_repeats = 2", "n_repeats = 2\nseeds = [1, 1]"), "[inner]: InnerSettings.seeds must"),
    ],
)
def test_bad_specs_name_the_problem(
    tmp_path: Path, change: tuple[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_spec(_write(tmp_path, GOOD.replace(*change, 1)))
    assert fragment in str(info.value)


def test_unknown_objective_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_spec(_write(tmp_path, GOOD.replace('["branin"]', '["no_such_function"]')))
    assert "branin" in str(info.value)  # the valid names are listed


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_spec(_write(tmp_path, "[run\nname="))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_shipped_spec_by_name() -> None:
    spec = load_spec("demo")
    assert isinstance(spec, BilevelSpec) and spec.run_name == "demo"
    with pytest.raises(ConfigurationError, match="shipped specs by name"):
        load_spec("no_such_spec")


def test_single_study_spec(tmp_path: Path) -> None:
    text = """
[study]
name = "one"
n_trials = 4
sampler = "tpe"

[study.proposer]
temperature = 0.3

[objective]
name = "branin"
"""
    spec = load_spec(_write(tmp_path, text))
    assert isinstance(spec, StudySpec)
    assert spec.objective.name == "branin" and spec.proposer == {"temperature": 0.3}


def test_state_settings_in_specs(tmp_path: Path) -> None:
    space = GOOD + 'optimizer_state = ["none", "cmaes"]\nstate_mode = "instead"\n'
    spec = load_spec(_write(tmp_path, space))
    assert isinstance(spec, BilevelSpec)
    assert spec.settings.outer.space is not None
    settings = spec.settings.outer.space.settings
    assert list(settings["optimizer_state"].choices) == ["none", "cmaes"]
    assert settings["state_mode"] == "instead"
    study = GOOD.replace("[outer.space]", "[outer.space]\noptimizer_state = \"gp\"")
    with pytest.raises(ConfigurationError, match="optimizer_state must be one of"):
        load_spec(_write(tmp_path, study))


def test_the_demo_has_power_for_the_tests_it_runs() -> None:
    import warnings

    from bilevel_optuna.stats import NoPowerWarning
    from bilevel_optuna.stats._hypothesis import wilcoxon_min_pvalue
    from bilevel_optuna.studies._racing import OuterRacing

    spec = load_spec(SHIPPED / "demo.toml")
    assert isinstance(spec, BilevelSpec)
    inner, outer = spec.settings.inner, spec.settings.outer
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoPowerWarning)
        racing = OuterRacing.for_run(
            prune=outer.prune,
            cost_objective=outer.cost_objective,
            n_repeats=inner.n_repeats,
            n_objectives=len(spec.objectives),
        )
    assert racing.enabled
    # The chosen configuration against each baseline, Holm-corrected: the smallest p-value the
    # paired test can give must clear Holm's first threshold, on training and held-out seeds.
    threshold = 0.05 / len(outer.baselines)
    held_out = inner.heldout_seeds or [None] * inner.n_repeats
    for n in (inner.n_repeats, len(held_out)):
        assert wilcoxon_min_pvalue(n) < threshold


@pytest.mark.slow
def test_the_demo_runs_with_no_power_warning_and_prints_its_table(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bilevel_optuna", "run", "demo", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NoPowerWarning" not in done.stderr and "no power" not in done.stdout, done.stderr
    assert "baseline  n" in done.stdout and "A12" in done.stdout
    assert "Everything of this run is in bilevel_demo/" in done.stdout
    assert (tmp_path / "bilevel_demo" / "demo.db").is_file()
    assert (tmp_path / "bilevel_demo" / "demo_report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bilevel_demo"]
