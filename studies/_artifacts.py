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
    from optuna.artifacts._protocol import ArtifactStore

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
    path = storage_file(storage_url)
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


def record_artifact_store(outer: optuna.Study, store: ArtifactStore) -> None:
    """Write where ``store`` keeps its files on the outer study (``bilevel:artifact_store``),
    so that ``bilevel-optuna dashboard`` finds the report and plots without being told.

    Only a folder can be recorded (its absolute path); for another store (S3, GCS) the
    attribute names its type, and the dashboard asks for it.
    """
    if isinstance(store, FileSystemArtifactStore):
        value: dict[str, str] = {"type": "folder", "path": str(Path(store._base_path).resolve())}
    else:
        value = {"type": type(store).__name__}
    if outer.user_attrs.get(_attrs.ARTIFACT_STORE) != value:
        outer.set_user_attr(_attrs.ARTIFACT_STORE, value)


def recorded_artifact_store(storage: Any) -> tuple[ArtifactStore | None, list[str]]:
    """The artifact folder recorded by the runs in ``storage``, and notes on what was not
    found (a folder gone, a store that is not a folder, two runs with different folders)."""
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    recorded = [
        (s.study_name, s.user_attrs[_attrs.ARTIFACT_STORE])
        for s in summaries
        if isinstance(s.user_attrs.get(_attrs.ARTIFACT_STORE), dict)
    ]
    notes: list[str] = []
    folders: dict[str, str] = {}
    for run, value in recorded:
        path = value.get("path")
        if value.get("type") != "folder" or not path:
            notes.append(
                f"Run {run} stores its artifacts in a {value.get('type')}: pass it with "
                "--artifact-dir or optuna-dashboard's own --artifact-dir."
            )
        elif not Path(path).is_dir():
            notes.append(f"Run {run} recorded the artifact folder {path}, which is not there.")
        else:
            folders.setdefault(path, run)
    if len(folders) > 1:
        notes.append(
            f"Runs record {len(folders)} artifact folders; showing {next(iter(folders))}. Pick "
            "another with --artifact-dir."
        )
    if not folders:
        return None, notes
    return FileSystemArtifactStore(next(iter(folders))), notes


def storage_file(storage_url: str) -> Path | None:
    """The file an SQLite URL or a journal names, or None (a database server, in memory)."""
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
    appendix: str = "",
) -> dict[str, str]:
    """Upload each comparison's Markdown report and PNG plots to ``outer``.

    ``comparisons`` maps a file stem (``"comparison"``, ``"heldout_comparison"``) to a
    :class:`~bilevel_optuna.stats.CompareResult`. ``key`` says what the report describes (the
    best arm and the finished outer trials): a rerun with nothing new uploads nothing again.
    Returns ``{file name: artifact id}``, also stored in the study's user attribute
    ``bilevel:report_artifacts``. ``appendix`` (Markdown, e.g. the model's spend) ends the
    first report.
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
            text = result.to_markdown(plots={n: p.name for n, p in named.items()})
            if appendix:
                text = text.rstrip("\n") + "\n\n" + appendix
                appendix = ""
            report.write_text(text, encoding="utf-8")
            for path in [report, *named.values()]:
                files[path.name] = upload_artifact(
                    artifact_store=store, file_path=str(path), study_or_trial=outer
                )
    outer.set_user_attr(_attrs.REPORT_ARTIFACTS, {"key": key, "files": files})
    return files
