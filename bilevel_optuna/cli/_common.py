"""Helpers shared by subcommands: resolving the storage URL from a spec or an option."""

from __future__ import annotations

import argparse
from pathlib import Path

from bilevel_optuna.exceptions import ConfigurationError


def storage_of(args: argparse.Namespace) -> str:
    """``--storage`` if given, else the storage named in the spec (``target``), else an error."""
    if getattr(args, "storage", None):
        return str(args.storage)
    target = getattr(args, "target", None)
    if target and "://" in target:
        return str(target)
    if target and Path(target).suffix == ".toml":
        from bilevel_optuna.studies import BilevelSpec
        from bilevel_optuna.studies import load_spec

        spec = load_spec(target)
        if isinstance(spec, BilevelSpec):
            url = spec.kwargs["storage"]
            if url:
                return str(url)
            from bilevel_optuna.studies._bilevel import DEFAULT_STORAGE

            return DEFAULT_STORAGE
        return spec.storage or f"sqlite:///{spec.name}.db"
    raise ConfigurationError(
        "Name a storage: a spec file (studies/demo.toml) or a URL, or pass --storage URL."
    )
