"""package/samplers/llm_sampler: laid out as the OptunaHub registry lays out a sampler, and
loaded the way the registry's own check loads it (``optunahub.load_local_module``)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import optuna
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import bilevel_optuna.samplers
from bilevel_optuna import _attrs

optunahub = pytest.importorskip("optunahub")

REGISTRY_ROOT = Path(__file__).resolve().parents[2] / "package"
PACKAGE = "samplers/llm_sampler"
FRONT_MATTER_KEYS = {"author", "title", "description", "tags", "optuna_versions", "license"}


def _front_matter() -> dict[str, str]:
    text = (REGISTRY_ROOT / PACKAGE / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must start with front matter between '---' lines"
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if line.strip())
    return {key.strip(): value.strip() for key, value in pairs}


def test_layout_is_the_registrys() -> None:
    folder = REGISTRY_ROOT / PACKAGE
    for name in ("__init__.py", "README.md", "LICENSE", "requirements.txt"):
        assert (folder / name).is_file(), name
    assert "MIT License" in (folder / "LICENSE").read_text()
    requirements = [
        line.strip()
        for line in (folder / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements == ["bilevel-optuna"]


def test_front_matter_has_the_registrys_fields() -> None:
    meta = _front_matter()
    assert set(meta) == FRONT_MATTER_KEYS
    tags = [t.strip() for t in meta["tags"].strip("[]").split(",")]
    assert "sampler" in tags  # required of every package under package/samplers/
    assert meta["license"] == "MIT License"


def _optuna_requirement() -> SpecifierSet:
    """The package's own requirement on optuna, as pip reads it from the installed metadata."""
    for text in importlib.metadata.requires("bilevel-optuna") or []:
        requirement = Requirement(text)
        if requirement.name == "optuna" and requirement.marker is None:
            return requirement.specifier
    raise AssertionError("bilevel-optuna does not require optuna")


def test_listed_optuna_versions_are_releases_the_package_accepts() -> None:
    # The registry shows `optuna_versions` as the versions a package was tested on: a YAML
    # list of release numbers. Which releases these are is a fact of the CI runs that passed
    # (README.md of the package); what must hold on any machine is the list's form and that
    # pip would install each listed release with this package.
    text = _front_matter()["optuna_versions"]
    assert re.fullmatch(r"\[\d+\.\d+\.\d+(, \d+\.\d+\.\d+)*\]", text), text
    versions = [Version(v) for v in text.strip("[]").split(", ")]
    assert versions == sorted(set(versions)), "list each version once, oldest first"
    accepted = _optuna_requirement()
    for version in versions:
        assert not (version.is_prerelease or version.is_devrelease or version.local), version
        assert version in accepted, f"optuna {version} does not satisfy optuna{accepted}"


def test_load_local_module_gives_the_packages_sampler() -> None:
    module = optunahub.load_local_module(package=PACKAGE, registry_root=str(REGISTRY_ROOT))
    assert module.__name__ == "optunahub_registry.package.samplers.llm_sampler"
    assert module.LLMSampler is bilevel_optuna.samplers.LLMSampler
    for name in module.__all__:
        assert getattr(module, name) is getattr(bilevel_optuna.samplers, name)


def test_loaded_sampler_runs_a_study_on_the_embedded_model() -> None:
    module = optunahub.load_local_module(package=PACKAGE, registry_root=str(REGISTRY_ROOT))
    sampler = module.LLMSampler(
        model="local",
        description="A quadratic bowl in x and y; lower is better.",
        mechanisms=[module.TabuMechanism()],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2 + (t.suggest_int("y", 0, 10) - 3) ** 2,
        n_trials=3,
    )
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Trials after the first asked the embedded model (their exchanges are recorded).
    for trial in study.trials[1:]:
        assert trial.user_attrs[_attrs.ATTEMPTS] >= 1
        assert trial.system_attrs[_attrs.EXCHANGES][0]["reply"]["model"].startswith("SmolLM2")
