"""ResearchSpec: the settings of a research run, from a spec file (research/_spec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research import ResearchSpec


def test_spec_files_are_read_and_bad_settings_named(tmp_path: Path) -> None:
    good = tmp_path / "r.toml"
    good.write_text(
        '[research]\nstorage = "sqlite:///x.db"\nrun = "demo"\nmode = "both"\n'
        '[evaluate]\nn_trials = 3\nobjectives = ["branin"]\n'
    )
    spec = ResearchSpec.from_toml(good)
    assert (spec.run, spec.mode, spec.n_outer_trials, spec.objectives) == (
        "demo",
        "both",
        3,
        ["branin"],
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[research]\nstorage = "sqlite:///x.db"\nrun = "demo"\nroundz = 2\n')
    with pytest.raises(ConfigurationError, match="Unknown settings \\['roundz'\\]"):
        ResearchSpec.from_toml(bad)
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        ResearchSpec(storage="sqlite:///x.db", run="demo", mode="poetry")
    demo = ResearchSpec.from_toml(Path(__file__).parents[2] / "studies" / "specs" / "research-demo.toml")
    assert demo.run == "demo" and demo.mode == "both"


_HEAD = '[research]\nstorage = "sqlite:///x.db"\nrun = "demo"\n'


@pytest.mark.parametrize(
    "text, match",
    [
        (f"{_HEAD}[extra]\n", r"Unknown tables \['extra'\]"),
        ('[research]\nrun = "demo"\n', "must set `storage`"),
        (f"{_HEAD}rounds = 0\n", "rounds must be >= 1"),
    ],
)
def test_bad_spec_files_say_what_to_fix(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=match):
        ResearchSpec.from_toml(path)
    with pytest.raises(ConfigurationError, match="No such research spec"):
        ResearchSpec.from_toml(tmp_path / "missing.toml")
