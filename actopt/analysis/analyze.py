"""`actopt analyze`: load a study from the store, write its report and figures, and record them as an analysis run."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from actopt.analysis import adaptive, frames, questions, tables
from actopt.analysis.conclusions import Study, conclude
from actopt.analysis.derive import Logged
from actopt.analysis.frames import Finding
from actopt.analysis.report import Drawn, Source, render_report
from actopt.core.metric_names import FINDINGS, RUNS_ANALYZED
from actopt.errors import UserError, describe_error
from actopt.tracking import notes, queries, records, signals
from actopt.tracking.records import (
    KIND_TAG,
)
from actopt.tracking.runlog import MlflowRunLogger
from actopt.tracking.schema import nearest_existing, writable
from actopt.tracking.store import (
    RUN_ID_VARIABLE,
    connect,
    shown_uri,
    store_errors,
)

ANALYSIS_RUN_NAME = "analysis"
REPORT_FILE = "report.md"


# The report's sections that answer the study and state its decisions, in the order the report has them: the
# analysis run's description. Lists of run names are left to the report, which the description links.
DESCRIBED_SECTIONS = ("Adaptive seeds", "Answers", "Findings")
RUN_LIST = "  - runs: "


def report_sections(report_text: str) -> dict[str, str]:
    """The report's ``## `` sections by heading, each up to the next one."""
    parts = report_text.split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip() for part in parts}


def findings_markdown(report_text: str) -> str:
    """The report's answers and findings (without the runs each lists): what the analysis run's description holds."""
    sections = report_sections(report_text)
    chosen = [sections[name] for name in sections if name in DESCRIBED_SECTIONS]
    lines = "\n\n".join(chosen).split("\n")
    return "\n".join(line for line in lines if not line.startswith(RUN_LIST))


def analysis_description(report_text: str, experiment_id: str, run_id: str) -> str:
    """The description: a link to the whole report, then its answers and findings, cut between blocks to fit."""
    link = f"[report.md]({notes.artifact_link(experiment_id, run_id, REPORT_FILE)})"
    head = f"**The whole report, with its tables, the runs behind each finding and the figures: {link}.**"
    body = findings_markdown(report_text)
    return notes.fit(f"{head}\n\n{body}" if body else head, f"the whole report is {link}")


def log_analysis_run(experiment: str, directory: Path, params: dict[str, str], metrics: dict[str, float],
                     report_text: str = "") -> str:
    """Log ``directory`` (report and figures) as the artifacts of an analysis run; returns its id.

    Under ``mlflow run`` the run MLflow created for the command (``MLFLOW_RUN_ID``) receives
    them, wherever ``mlflow run --experiment-name`` put it; otherwise a new run named
    ``analysis`` in the analysed experiment. Either way it is tagged ``actopt.kind=analysis``
    so that later analyses leave it out.
    """
    from mlflow.entities import Metric, RunTag

    client = connect()
    with store_errors(client.tracking_uri):
        run_id = os.environ.get(RUN_ID_VARIABLE)
        created = not run_id
        if created:
            experiment_id = queries.find_experiment(client, experiment).experiment_id
            run_id = client.create_run(experiment_id, run_name=ANALYSIS_RUN_NAME).info.run_id
        try:
            tags = [RunTag(KIND_TAG, "analysis"), RunTag("mlflow.runName", ANALYSIS_RUN_NAME)]
            if report_text:
                experiment_id = client.get_run(run_id).info.experiment_id
                tags.append(RunTag(notes.DESCRIPTION_TAG, analysis_description(report_text, experiment_id, run_id)))
            stamp = int(time.time() * 1000)
            values = [Metric(key, value, stamp, 0) for key, value in metrics.items()]
            client.log_batch(run_id, tags=tags, metrics=values)
            MlflowRunLogger(client, run_id).log_params(params)
            try:
                client.log_artifacts(run_id, str(directory))
            except OSError as error:  # the artifact location, not the tracking store, cannot be written
                raise UserError(f"cannot write the analysis run's artifacts: {describe_error(error)}") from None
        except BaseException as error:  # Ctrl-C and SIGTERM end it KILLED, as they end a training run
            if created:
                stopped = isinstance(error, (KeyboardInterrupt, signals.Terminated))
                client.set_terminated(run_id, "KILLED" if stopped else "FAILED")
            raise
        if created:
            client.set_terminated(run_id, "FINISHED")
    return run_id


@dataclass
class AnalysisResult:
    """What ``write_analysis`` wrote: the report, the figures, those not drawn (with why), the findings that hold."""

    report: Path
    figures: list[Path]
    skipped: dict[str, str]
    findings: list[Finding] = field(default_factory=list)


def write_analysis(study: Study, folder: Path, source: Source, adaptive_section: str = "") -> AnalysisResult:
    """Draw the study's figures and render ``report.md`` into ``folder`` (replacing earlier PNGs there)."""
    from actopt.analysis import plots

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    drawn, skipped = plots.draw_all(study.frames, folder)
    gallery = next((path for path, *_ in drawn if path.name == plots.GALLERY_FILE), None)
    figures = tuple(item for item in drawn if item[0] != gallery)
    report = folder / REPORT_FILE
    report.write_text(render_report(study, Drawn(figures, skipped, gallery), source, adaptive_section))
    return AnalysisResult(report, [path for path, *_ in drawn], skipped, study.holding())


@dataclass
class Outcome:
    """What ``analyze_experiment`` wrote, how many runs it analysed, and its analysis run (None without logging)."""

    written: AnalysisResult
    runs: int
    run_id: str | None
    history_problems: dict[str, str] = field(default_factory=dict)  # run id: what was wrong with its history.csv


def analyze_experiment(
    experiment: str,
    parent_run_id: str | None = None,
    filter_string: str | None = None,
    output_dir: str | Path = "analysis",
    log: bool = True,
) -> Outcome:
    """Read an experiment's runs, write ``<output_dir>/<experiment>/report.md`` and figures, log them."""
    folder = check_output_paths(Path(output_dir), experiment)
    logged = load(experiment, parent_run_id, filter_string)
    runs = logged.runs
    source = Source(experiment, shown_uri(), parent_run_id or "", filter_string or "")
    asked, method = questions.declared(str(runs["study"].fillna("").iloc[0]))
    parents = sorted(set(runs["parent_run_id"].dropna()) - {""})
    study = conclude(logged, asked, method)
    try:
        written = write_analysis(study, folder, source, adaptive.report_section(records.sweep_looks(parents)))
    except OSError as error:  # a full disk, a folder made read-only meanwhile: nothing is logged
        raise UserError(f"cannot write the analysis to {folder}: {describe_error(error)}") from None
    run_id = None
    if log:
        params = {"experiment": experiment, "parent_run_id": parent_run_id or "", "filter": filter_string or "",
                  "output_dir": str(output_dir)}
        metrics = {RUNS_ANALYZED: float(len(runs)), FINDINGS: float(len(written.findings))}
        run_id = log_analysis_run(experiment, folder, params, metrics, written.report.read_text(encoding="utf-8"))
    return Outcome(written, len(runs), run_id, logged.histories.attrs.get("history_problems", {}))


def load(experiment: str, parent_run_id: str | None, filter_string: str | None) -> Logged:
    """The runs to analyse from the store (the others with why each is left out), their histories, and the
    gradient histograms of the runs the figures show."""
    everything = queries.load_runs(experiment, parent_run_id, filter_string, kinds=None)
    scope = "".join([f" under parent run {parent_run_id}" if parent_run_id else "",
                     f" matching filter {filter_string!r}" if filter_string else ""])
    runs, left_out = frames.select_runs(everything, experiment, os.environ.get(RUN_ID_VARIABLE), scope)
    histories = queries.load_histories(runs)
    histograms = queries.load_gradient_histograms(runs[runs["run_id"].isin(tables.histogram_runs(runs))])
    return Logged(runs, left_out, histories, histograms)


def check_output_paths(output_dir: Path, experiment: str) -> Path:
    """The one place that checks where the analysis goes, before anything is read or created: the report's
    folder ``output_dir/<experiment>`` and its ``report.md`` can be made and written. Returns the folder."""
    folder = output_dir / safe_folder_name(experiment)
    existing = nearest_existing(folder.absolute())
    report_file = folder / REPORT_FILE
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif report_file.is_dir():
        problem = f"{report_file} is a folder, not a file"
    elif not writable(existing):
        problem = f"the folder {existing} is not writable"
    elif report_file.exists() and not os.access(report_file, os.W_OK):
        problem = f"the file {report_file} is not writable"
    else:
        return folder
    raise UserError(f"cannot write the analysis to --output-dir {output_dir}: {problem}; choose another --output-dir")


# A folder name's limit on common file systems is 255 bytes; a long name keeps its start and a digest.
FOLDER_NAME_BYTES = 120


def safe_folder_name(experiment: str) -> str:
    """The experiment's name as one folder name of its own: kept as it is when it is one already; otherwise
    (a ``/``, ``..``, a character a file system may refuse, a name over FOLDER_NAME_BYTES bytes) its safe
    characters and a digest of the whole name, so that ``a/b`` and ``a_b`` never share a folder."""
    safe = "".join(char if char.isascii() and (char.isalnum() or char in "-_.") else "_" for char in experiment)
    if safe == experiment and not experiment.startswith(".") and len(experiment) <= FOLDER_NAME_BYTES:
        return experiment
    digest = hashlib.sha256(experiment.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe.strip('.')[:FOLDER_NAME_BYTES]}-{digest}".lstrip("-") or digest
