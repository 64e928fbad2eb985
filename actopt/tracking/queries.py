"""Read a study back from the store as pandas frames: runs with their params, tags and summary metrics; per-epoch
histories; gradient histograms."""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from actopt.core import metric_names
from actopt.core.config import TrainConfig, format_value, parse_value
from actopt.core.run_end import HISTOGRAM_ARTIFACT, HISTORY_ARTIFACT
from actopt.errors import UserError, describe_error
from actopt.tracking.records import (
    KIND_TAG,  # KIND_TAG marks sweep parents and analysis runs
    search_all,
)
from actopt.tracking.store import (  # KIND_TAG marks sweep parents and analysis runs
    StoreError,
    connect,
    shown_uri,
    store_errors,
    tracking_uri,
)

# Prefix of the metrics MLflow's system-metrics monitor logs on its own clock.
SYSTEM_PREFIX = "system/"
# Metrics logged once at the end (step 0): they are run summaries, not part of a history.
SUMMARY_METRICS = metric_names.SUMMARY_METRICS
# Parallel artifact downloads: enough to hide an HTTP round trip, few enough for a small server.
DOWNLOAD_WORKERS = 8
_CONFIG_FIELDS = {item.name: item for item in fields(TrainConfig)}
# Options added after runs were first logged, as params of a run from before them: it trained with their defaults
# ([-1, 1] inputs, the whole training split), and is compared with the runs that log them as such.
ADDED_FIELDS = {name: format_value(_CONFIG_FIELDS[name].default) for name in ("input_scaling", "train_examples")}
_COLUMN_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean"}
INT64_RANGE = (-(2**63), 2**63 - 1)


def find_experiment(client: Any, experiment: str) -> Any:
    """The experiment named ``experiment`` (or with that id); unknown names list the known ones."""
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            found = client.get_experiment(experiment)
    if found is None:
        names = sorted(item.name for item in client.search_experiments())
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        raise StoreError(f"unknown experiment {experiment!r} in {shown_uri(client.tracking_uri)}; "
                         f"known: {shown or 'none'}")
    return found


def search_filter(parent_run_id: str | None, filter_string: str | None) -> str:
    clauses = [f"tags.mlflow.parentRunId = '{parent_run_id}'"] if parent_run_id else []
    if filter_string:
        clauses.append(filter_string)
    return " and ".join(clauses)


def load_runs(
    experiment: str,
    parent_run_id: str | None = None,
    filter_string: str | None = None,
    kinds: Sequence[str] | None = ("training",),
) -> pd.DataFrame:
    """One row per run of ``experiment``: identity, typed params, tags and the final metrics.

    Columns: ``run_id, run_name, status, kind, start_time, end_time, parent_run_id,
    experiment_id, artifact_uri``; one column per ``TrainConfig`` field, cast to its type
    (MLflow keeps params as text); ``data_digest`` (of the data it trained on); ``study``,
    ``diverged`` (boolean), ``diverged_epoch``;
    the summaries ``best_epoch, best_val_accuracy, test_accuracy, test_loss``; and
    ``final_<key>`` with the last logged value of every other metric. ``kind`` is ``training``
    (the run logged ``val_accuracy``), ``sweep`` or ``analysis`` (tagged, or parent of others),
    or ``other``; ``kinds`` keeps those kinds (``None``: all). ``filter_string`` is an MLflow
    search filter, e.g. ``"params.optimizer = 'sgd' and tags.study = 'fashion-activations'"``.
    """
    with store_errors(tracking_uri()):
        client = connect()  # a sqlite store opens here: a path that cannot hold it fails here
        found = find_experiment(client, experiment)
        runs = search_all(client, found.experiment_id, search_filter(parent_run_id, filter_string), order_by=())
    table = runs_frame(runs)
    if kinds is not None:
        table = table[table["kind"].isin(list(kinds))].reset_index(drop=True)
    return table


def runs_frame(runs: Iterable[Any]) -> pd.DataFrame:
    """Build ``load_runs``'s table from MLflow ``Run`` objects."""
    runs = list(runs)
    parents = {run.data.tags.get("mlflow.parentRunId") for run in runs}
    rows = [run_row(run, run.info.run_id in parents) for run in runs]
    table = pd.DataFrame(rows, columns=run_columns(rows))
    for name, item in _CONFIG_FIELDS.items():
        if item.type in _COLUMN_DTYPES:
            table[name] = table[name].astype(_COLUMN_DTYPES[item.type])
    table["diverged"] = table["diverged"].astype("boolean")
    for name in ("diverged_epoch", metric_names.BEST_EPOCH):
        table[name] = pd.to_numeric(table[name]).round().astype("Int64")
    for name in ("start_time", "end_time"):
        table[name] = pd.to_datetime(table[name], unit="ms", utc=True)
    metric_columns = [name for name in table.columns if name in SUMMARY_METRICS[1:] or name.startswith("final_")]
    table[metric_columns] = table[metric_columns].astype("float64")
    # The casts above leave hundreds of column blocks (a 40-layer run logs many final_ keys): pandas
    # would warn "highly fragmented" on every later assign in the analysis, so the blocks are joined once.
    return table.copy()


def run_columns(rows: list[dict[str, Any]]) -> list[str]:
    fixed = ["run_id", "run_name", "status", "kind", "start_time", "end_time", "parent_run_id", "experiment_id",
             "artifact_uri", *_CONFIG_FIELDS, "data_digest", "diverged", "diverged_epoch", *SUMMARY_METRICS]
    finals = sorted({name for row in rows for name in row if name.startswith("final_")})
    return fixed + finals


def run_row(run: Any, is_parent: bool) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    trained = metric_names.VAL_ACCURACY in metrics
    kind = tags.get(KIND_TAG) or ("training" if trained else "sweep" if is_parent else "other")
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "kind": kind,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "experiment_id": run.info.experiment_id,
        "artifact_uri": run.info.artifact_uri,
        "study": tags.get("study"),  # the param, when logged, wins below
        "diverged": {"true": True, "false": False}.get(tags.get("diverged", "")),
        "diverged_epoch": tags.get("diverged_epoch"),
        "data_digest": data_digest(run),
    }
    row.update(typed_params(run.data.params))
    for key, value in metrics.items():
        row[key if key in SUMMARY_METRICS else f"final_{key}"] = value
    return row


def data_digest(run: Any) -> str | None:
    """The digest of the data the run trained on (its first dataset input), None when it logged none."""
    inputs = getattr(run, "inputs", None)
    datasets = getattr(inputs, "dataset_inputs", None) or []
    return datasets[0].dataset.digest if datasets else None


def typed_params(params: dict[str, str]) -> dict[str, Any]:
    """Config params cast to their ``TrainConfig`` types; a value that does not parse becomes missing."""
    typed: dict[str, Any] = {}
    if "activation" in params:  # a run of actopt's (another tool's run stays without them, and is left out)
        params = {**ADDED_FIELDS, **params}
    for name, item in _CONFIG_FIELDS.items():
        if name in params:
            with contextlib.suppress(UserError):
                value = parse_value(item, params[name])
                # A run logged before integers were bounded may hold one that no Int64 column can (seed 2**64).
                if item.type != "int" or INT64_RANGE[0] <= value <= INT64_RANGE[1]:
                    typed[name] = value
    return typed


def load_histories(runs: pd.DataFrame | Iterable[str], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch values of many runs in long format: ``run_id, step, key, value``, sorted.

    ``runs`` is ``load_runs``'s table (or run ids); ``keys`` are metric names or shell patterns
    (``"grad_norm/*"``), all per-epoch metrics when omitted. Non-finite values (a diverged loss)
    are kept. ``result.attrs["fallback_runs"]`` lists the runs read metric by metric because
    they have no ``history.csv`` or one that is not their whole history; ``result.attrs["history_problems"]``
    says, by run id, what was wrong with the ``history.csv`` of those that had one.
    """
    client = connect()
    if isinstance(runs, pd.DataFrame):
        targets = list(zip(runs["run_id"], runs["artifact_uri"], expected_last_steps(runs)))
    else:
        targets = [(run_id, None, None) for run_id in runs]
    with store_errors(client.tracking_uri), ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        results = list(pool.map(lambda target: run_history(client, *target, keys), targets))
    rows = [row for run_rows, _ in results for row in run_rows]
    table = pd.DataFrame(rows, columns=["run_id", "step", "key", "value"])
    table = table.astype({"run_id": object, "step": "int64", "key": object, "value": "float64"})
    table = table.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)
    table.attrs["fallback_runs"] = [target[0] for target, (_, fell_back) in zip(targets, results) if fell_back]
    table.attrs["history_problems"] = {target[0]: f"{problem}; read from the metric store"
                                       for target, (_, problem) in zip(targets, results) if problem}
    return table


Row = tuple[str, int, str, float]


def expected_last_steps(runs: pd.DataFrame) -> list[int | None]:
    """The last epoch each run's history must reach: where it diverged, else its ``epochs``; None when unknown."""
    unknown = pd.Series(pd.NA, index=runs.index, dtype="Float64")
    diverged, epochs = (runs[name].astype("Float64") if name in runs else unknown for name in ("diverged_epoch",
                                                                                               "epochs"))
    ends = diverged.fillna(epochs)
    return [None if pd.isna(end) else int(end) for end in ends]


def run_history(client: Any, run_id: str, artifact_uri: str | None, expected_last: int | None,
                keys: Sequence[str] | None) -> tuple[list[Row], str | bool]:
    """One run's ``(run_id, step, key, value)`` rows from its artifact, else from the metric store; and
    whether it fell back: True without a ``history.csv``, or what was wrong with the one it has (empty, cut
    short of ``expected_last``, unreadable): a cut file is not the run's whole history."""
    if artifact_uri is None:
        artifact_uri = client.get_run(run_id).info.artifact_uri
    text = read_artifact(client, artifact_uri, HISTORY_ARTIFACT)
    if text is None:
        return history_from_metrics(client, run_id, keys), True
    try:
        rows = history_from_csv(run_id, text, keys)
        last = max((int(line.split(",", 1)[0]) for line in text.splitlines()[1:] if line), default=None)
    except (ValueError, IndexError) as error:
        problem = f"{HISTORY_ARTIFACT} cannot be read ({describe_error(error)})"
    else:
        if last is None:
            problem = f"{HISTORY_ARTIFACT} is empty"
        elif expected_last is not None and last < expected_last:
            problem = f"{HISTORY_ARTIFACT} ends at step {last} of {expected_last}"
        else:
            return rows, False
    return history_from_metrics(client, run_id, keys), problem


def read_artifact(client: Any, artifact_uri: str, path: str) -> str | None:
    """The text of one artifact file, or None when the run does not have it."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            local = download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{path}", dst_path=folder,
                                       tracking_uri=client.tracking_uri)
        except (MlflowException, OSError) as error:
            if is_missing(error):
                return None
            raise
        return Path(local).read_text()


def is_missing(error: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(error, FileNotFoundError):
        return True
    text = str(error).lower()
    code = getattr(error, "error_code", "") if isinstance(error, MlflowException) else ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "404" in text or "no such" in text or "not found" in text


def wanted(key: str, keys: Sequence[str] | None) -> bool:
    return keys is None or any(fnmatch.fnmatchcase(key, pattern) for pattern in keys)


def history_from_csv(run_id: str, text: str, keys: Sequence[str] | None) -> list[Row]:
    """Rows of ``run_end.history_csv``'s table. An empty cell means "not logged at this step";
    "nan" and "inf" are logged values and kept. (Plain csv: for tables this small it is several
    times faster than pandas' reader.)"""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, ["step"])
    columns = [(index, key) for index, key in enumerate(header) if index and wanted(key, keys)]
    rows: list[Row] = []
    for record in reader:
        step = int(record[0])
        rows.extend((run_id, step, key, float(record[index])) for index, key in columns if record[index])
    return rows


def history_from_metrics(client: Any, run_id: str, keys: Sequence[str] | None) -> list[Row]:
    """The slow path: one ``get_metric_history`` request per key; the last value per step wins.

    MLflow's ``system/`` metrics are sampled by a timer, not per epoch, and history.csv (the fast path)
    never holds them: a run that lasted past the first sample would otherwise read differently by path.
    """
    names = [key for key in client.get_run(run_id).data.metrics
             if key not in SUMMARY_METRICS and not key.startswith(SYSTEM_PREFIX) and wanted(key, keys)]
    rows: list[Row] = []
    for key in names:
        points = sorted(client.get_metric_history(run_id, key), key=lambda point: (point.step, point.timestamp))
        latest = {point.step: point.value for point in points}
        rows.extend((run_id, step, key, value) for step, value in latest.items())
    return rows


def load_gradient_histograms(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``gradient_histograms.json`` of each run that has one, by run id."""
    client = connect()
    targets = list(zip(runs["run_id"], runs["artifact_uri"]))
    with store_errors(client.tracking_uri), ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        texts = list(pool.map(lambda target: read_artifact(client, target[1], HISTOGRAM_ARTIFACT), targets))
    return {run_id: document for (run_id, _), text in zip(targets, texts)
            if text is not None and (document := histogram_document(text)) is not None}


def histogram_document(text: str) -> dict[str, Any] | None:
    """A ``gradient_histograms.json`` as its document; None for one that is cut or not JSON (the run's
    histogram figure is then not drawn, like a run that logged none)."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
