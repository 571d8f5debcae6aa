"""The comparison report and its plots, stored as Optuna artifacts of the outer study.

optuna-dashboard lists a study's artifacts and shows Markdown and images inline, so the report
of a bilevel run is found where its trials are. Artifacts live in an artifact store: by
default a folder beside the SQLite (or journal) file, ``<file stem>_artifacts/``; any other
folder or ``optuna.artifacts`` store the caller names (S3, GCS); none for server databases
unless one is named, since a local folder would not be seen from the other servers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts import upload_artifact

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import is_journal

if TYPE_CHECKING:
    from bilevel_optuna._optuna_private import ArtifactStore

_logger = get_logger(__name__)

#: ``artifacts=`` value that puts the store beside the storage's file, where it has one.
AUTO = "auto"


def artifact_store(artifacts: Any, storage_url: str) -> ArtifactStore | None:
    """The store ``artifacts`` names: ``"auto"`` (beside an SQLite or journal file), a folder,
    a store object, or None (no artifacts)."""
    if artifacts is None:
        return None
    if isinstance(artifacts, (str, os.PathLike)) and os.fspath(artifacts) != AUTO:
        folder = Path(artifacts)
        folder.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(folder))
    if not isinstance(artifacts, (str, os.PathLike)):
        return artifacts  # an optuna.artifacts store
    path = _storage_file(storage_url)
    if path is None:
        _logger.info(
            "No artifact store for %s: name one with artifacts=FOLDER (or an S3/GCS store) to "
            "keep the report beside the run.",
            storage_url.split(":", 1)[0],
        )
        return None
    folder = path.parent / f"{path.stem}_artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def _storage_file(storage_url: str) -> Path | None:
    if is_journal(storage_url):
        return Path(storage_url)
    from sqlalchemy.engine import make_url

    try:
        url = make_url(storage_url)
    except Exception:  # noqa: BLE001 - not a URL: no file to put the store beside
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def store_report(
    outer: optuna.Study,
    store: ArtifactStore,
    comparisons: dict[str, Any],
    *,
    key: str,
) -> dict[str, str]:
    """Upload each comparison's Markdown report and PNG plots to ``outer``.

    ``comparisons`` maps a file stem (``"comparison"``, ``"heldout_comparison"``) to a
    :class:`~bilevel_optuna.stats.CompareResult`. ``key`` says what the report describes (the
    best arm and the finished outer trials): a rerun with nothing new uploads nothing again.
    Returns ``{file name: artifact id}``, also stored in the study's user attribute
    ``bilevel:report_artifacts``.
    """
    previous = outer.user_attrs.get(_attrs.REPORT_ARTIFACTS) or {}
    if previous.get("key") == key:
        return dict(previous.get("files", {}))
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bilevel-report-") as tmp:
        for stem, result in comparisons.items():
            if result is None:
                continue
            folder = Path(tmp) / stem
            folder.mkdir()
            plots: dict[str, Path] = {}
            try:
                plots = result.plot(folder, formats=("png",))
            except Exception as err:  # noqa: BLE001 - plots need matplotlib; the report does not
                _logger.info("No plots in the stored report (%s).", err)
            named = {}
            for name, path in plots.items():
                target = Path(tmp) / f"{stem}_{path.name}"
                path.rename(target)
                named[name] = target
            report = Path(tmp) / f"{stem}.md"
            report.write_text(
                result.to_markdown(plots={n: p.name for n, p in named.items()}), encoding="utf-8"
            )
            for path in [report, *named.values()]:
                files[path.name] = upload_artifact(
                    artifact_store=store, file_path=str(path), study_or_trial=outer
                )
    outer.set_user_attr(_attrs.REPORT_ARTIFACTS, {"key": key, "files": files})
    return files
