"""A sqlite store's first use: created under a lock, checked for a half-created schema, repaired when it holds nothing.

MLflow creates a new sqlite store's tables and then runs some fifty migrations, each committed on its own and
without any lock between processes. A process killed in between (SIGKILL, out of memory, a power cut) leaves a
file on which every later start fails with ``table ... already exists`` or ``duplicate column name``; two processes
that open a new store at once break it the same way. ``prepare_sqlite_store`` runs before MLflow opens the file:
it holds a lock for the whole creation, and a store whose schema is incomplete is emptied and created again when
it holds no run and no experiment of its own, or refused with one line saying what to do when it does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from actopt.errors import UserError, mask_credentials

SQLITE_PREFIX = "sqlite:///"
# MLflow's own experiment, made with the tables: a store holding only it holds nothing of the user's.
DEFAULT_EXPERIMENT_ID = 0
# `revision = "0584bdc529eb"` and `down_revision = "f5a4f2784254"` (or a tuple of them, or None) in a migration.
ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*=\s*(.*)$", re.MULTILINE)
REVISION = re.compile(r"[0-9a-f]{6,}")
# The stores this process has seen complete: checked once per process, not at every connection.
_READY: set[Path] = set()


class BrokenStore(UserError):
    """A store whose schema is incomplete and that holds runs: actopt will not touch it."""


@dataclass(frozen=True)
class SchemaState:
    """What a sqlite file holds: its tables, its schema revision, and how much of the user's data."""

    tables: frozenset[str]
    revision: str | None
    runs: int
    experiments: int  # besides MLflow's Default

    @property
    def empty(self) -> bool:
        return not self.tables


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (relative to the working folder, or absolute), else None."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    rest = uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def read_state(path: Path) -> SchemaState:
    """The tables, alembic revision and counts of a sqlite file; opening it rolls back what a killed process
    left half-written in its journal."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = {name for (name,) in connection.execute("select name from sqlite_master where type = 'table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("select version_num from alembic_version").fetchone()
            revision = row[0] if row else None
        runs = connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
        experiments = (connection.execute("select count(*) from experiments where experiment_id != ?",
                                          (DEFAULT_EXPERIMENT_ID,)).fetchone()[0] if "experiments" in tables else 0)
    return SchemaState(frozenset(tables - {"sqlite_sequence"}), revision, runs, experiments)


def head_revision() -> str:
    """The revision MLflow's migrations end at: the one no other migration names as its ``down_revision``.
    Read from the migration files' two assignments, in milliseconds; alembic's own reading takes 1.5 s."""
    import mlflow.store.db_migrations as migrations

    revisions, parents = set(), set()
    for script in (Path(migrations.__file__).parent / "versions").glob("*.py"):
        for name, value in ASSIGNMENT.findall(script.read_text()):
            (revisions if name == "revision" else parents).update(REVISION.findall(value))
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def expected_schema() -> tuple[frozenset[str], str]:
    """The tables MLflow's models define and the revision its migrations end at."""
    from mlflow.store.db.base_sql_model import Base

    return frozenset(Base.metadata.tables), head_revision()


def complete(state: SchemaState) -> bool:
    tables, head = expected_schema()
    return tables <= state.tables and state.revision == head


def empty_store(path: Path) -> None:
    """Drop every table of a store that holds nothing, so that MLflow creates it again from the start."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("pragma foreign_keys = off")
        names = [name for (name,) in connection.execute(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        connection.execute("begin immediate")
        for name in names:
            connection.execute(f'drop table if exists "{name}"')
        connection.execute("commit")


@contextlib.contextmanager
def creation_lock(path: Path) -> Iterator[None]:
    """One process at a time checks and creates this store. The lock file lives in the temporary folder,
    named by the store's real path, so that ``sqlite:///mlflow.db`` and its absolute spelling share it;
    the kernel releases it when its holder dies, however it dies."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"actopt-store-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def nearest_existing(path: Path) -> Path:
    return next((parent for parent in (path, *path.parents) if parent.exists()), path)


def writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried, since permission bits say nothing to root, and a
    read-only file system refuses root too."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def unwritable_folder(path: Path) -> Path | None:
    """The folder that keeps ``path`` from being created, if one does: its nearest existing ancestor, when that is
    a folder nobody can write to (a file in the way is left to the write that will fail)."""
    existing = nearest_existing(path.absolute())
    return existing if existing.is_dir() and not writable(existing) else None


def check_folder(uri: str, path: Path) -> None:
    """A store that does not exist yet must be creatable: MLflow would retry for minutes otherwise."""
    folder = unwritable_folder(path.absolute().parent)
    if folder is not None:
        raise UserError(f"cannot create the tracking store {mask_credentials(uri)}: the folder {folder} is not "
                        "writable; run actopt in a folder you can write to, or set MLFLOW_TRACKING_URI to another "
                        "store")


def repair(uri: str, path: Path, report=lambda line: None) -> None:
    """Empty a half-created store that holds nothing; refuse, with what to do, one that holds runs."""
    state = read_state(path)
    if state.empty or complete(state):
        return
    shown = mask_credentials(uri)
    if state.runs or state.experiments:
        held = f"{state.runs} run(s) and {state.experiments} experiment(s)"
        raise BrokenStore(f"the tracking store {shown} has an incomplete schema (revision {state.revision or 'none'}) "
                          f"but holds {held}, so actopt leaves it alone: back it up, then run "
                          f"`mlflow db upgrade {shown}`")
    empty_store(path)
    report(f"the tracking store {shown} was left half-created (revision {state.revision or 'none'}, no runs): "
           "created again")


def prepare_sqlite_store(uri: str, open_store: Callable[[], object], report=lambda line: None) -> bool:
    """Before MLflow first touches a sqlite store (an ``MlflowClient`` for it already opens it): it can be
    created, a half-created one is repaired, and ``open_store()`` (MLflow's creation and migrations) runs while
    no other actopt process can. Returns whether it called ``open_store``: not for other stores, nor for one
    this process has already seen complete."""
    path = sqlite_path(uri)
    if path is None or path.resolve() in _READY:
        return False
    if not path.exists():
        check_folder(uri, path)
    with creation_lock(path):
        if path.is_file() and path.stat().st_size:
            repair(uri, path, report)
        open_store()
    _READY.add(path.resolve())
    return True
