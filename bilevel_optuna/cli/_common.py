"""Helpers shared by subcommands: resolving the storage URL from a spec or an option."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bilevel_optuna._storage import STORAGE_ENV
from bilevel_optuna._storage import default_storage_url
from bilevel_optuna._storage import is_journal
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies import BilevelSpec
from bilevel_optuna.studies import load_spec
from bilevel_optuna.studies._single import spec_storage_url


def storage_of(args: argparse.Namespace) -> str:
    """``--storage`` if given, else the storage ``target`` names (a URL, a journal file or a
    spec's storage), else ``$OPTUNA_STORAGE``, else an error."""
    if getattr(args, "storage", None):
        return str(args.storage)
    target = getattr(args, "target", None)
    if target and ("://" in target or is_journal(target)):
        return str(target)
    if target and Path(target).suffix == ".toml":
        spec = load_spec(target)
        if isinstance(spec, BilevelSpec):
            return default_storage_url(spec.kwargs["storage"])
        return spec_storage_url(spec)
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    raise ConfigurationError(
        "Name a storage: a spec file (studies/specs/demo.toml), a URL or a journal file, pass "
        f"--storage URL, or set {STORAGE_ENV}."
    )
