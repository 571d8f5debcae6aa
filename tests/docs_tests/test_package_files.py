"""The files every well-kept package has: py.typed shipped, a changelog that names the version."""

from __future__ import annotations

import configparser
import re

from docs_tests._docs import ROOT

import bilevel_optuna


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def test_every_package_folder_ships_py_typed() -> None:
    config = _setup_cfg()
    package_dir = dict(
        line.split("=")
        for line in config["options"]["package_dir"].split("\n")
        if line.strip()
    )
    package_dir = {k.strip(): v.strip() for k, v in package_dir.items()}
    package_data = config["options.package_data"]
    # Each folder that is the root of a package tree (the package and the mapped subpackages).
    for package, folder in package_dir.items():
        assert (ROOT / folder / "py.typed").exists(), f"{folder}/py.typed is missing"
        patterns = [p.strip() for key in (package, "*") for p in package_data.get(key, "").split(",")]
        assert "py.typed" in patterns, f"setup.cfg does not ship py.typed for {package}"


def test_the_changelog_names_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    version = bilevel_optuna.__version__
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, flags=re.M)
    unreleased = re.search(r"^## \[Unreleased\]\n+To be released as ([\d.]+)", text, flags=re.M)
    assert version in released or (unreleased and unreleased.group(1) == version), (
        f"CHANGELOG.md has no section for {version}"
    )
