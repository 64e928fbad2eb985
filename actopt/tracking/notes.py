"""What the MLflow UI shows without a click: run and experiment descriptions, diagnosis tags, the experiment's kind.

The UI renders the tag ``mlflow.note.content`` (markdown) as the description of a run, or of an
experiment when it is an experiment tag. The ``diagnosis.<rule>`` tags (``true``/``false``) let the
runs table filter, e.g. ``tags."diagnosis.dead_units" = 'true'``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from actopt.core import description, diagnosis, metric_names
from actopt.core.config import TrainConfig
from actopt.core.member import TrainResult
from actopt.core.run_end import HISTOGRAM_IMAGE_KEY

DESCRIPTION_TAG = "mlflow.note.content"
DIAGNOSIS_PREFIX = "diagnosis."
# MLflow 3's experiment kinds: this one means classic model training, not GenAI. The 3.17 UI decides its
# experiment page by the sidebar's GenAI / Model training switch (the URL's workflowType, else the browser's
# last choice, else GenAI) and reads this tag only where that switch is disabled; it is set for those UIs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# What opens an experiment of the 3.17 UI on its runs table in the Model training view (docs/diagnosis.md).
RUNS_PAGE = "/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
RUN_PAGE = "/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
ARTIFACT_PAGE = "#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
# MLflow 3.17 cuts a longer run tag to mlflow.utils.validation.MAX_TAG_VAL_LENGTH (8000 characters) without a word
# (MLFLOW_TRUNCATE_LONG_VALUES), mid-number if it falls there; the UI shows a description of that length whole.
MAX_DESCRIPTION = 8000


# The 3.17 UI's shared views: an experiment tag ``mlflow.sharedViewState.<key>`` holding the runs table's state as
# JSON (search, sort, columns), opened by ``?viewStateShareKey=<key>``. A search with a sort by a metric shows the
# matching runs flat, not folded under their parent; columns are otherwise kept in the browser and not addressable.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
STUDY_VIEW = "study"
STUDY_PAGE = "/#/experiments/{experiment_id}/runs?viewStateShareKey=" + STUDY_VIEW + "&workflowType=machine_learning"
STUDY_CHARTS_PAGE = STUDY_PAGE + "&compareRunsMode=CHART"
# What a reader of a study's children looks at first, after the configuration's varying params and the seed.
STUDY_METRICS = (metric_names.BEST_VAL_ACCURACY, metric_names.TEST_ACCURACY, metric_names.TEST_LOSS)
STUDY_TAGS = (metric_names.BEST_EPOCH, "diverged", *(DIAGNOSIS_PREFIX + rule for rule in ("overfitting", "dead_units",
                                                                                 "saturation")))


# The run page of MLflow 3.17 orders its charts itself: one section per key prefix (the part before the last "/"),
# those sections alphabetically first, then "Model metrics" (keys without "/", alphabetically), the layout kept only
# in the browser's storage; a logging program cannot change it. A shared view carries the experiment's chart view
# instead (``compareRunCharts``, ``compareRunSections``): the study's view opens with these charts first, then the
# UI's own sections; the histogram card without the run's parameters, whose text otherwise fills it.
HEADLINE_CHARTS = (metric_names.VAL_ACCURACY, metric_names.VAL_LOSS, metric_names.TRAIN_LOSS,
                   metric_names.TRAIN_ACCURACY)
HEADLINE_SECTION = "actopt-headline"


def headline_charts() -> dict[str, object]:
    """The shared view's chart layout: a first section of the headline curves and the gradient-histogram images."""
    base = {"metricSectionId": HEADLINE_SECTION, "isGenerated": False, "deleted": False, "runsCountToCompare": 10}
    lines = [{**base, "uuid": f"actopt-{key}", "type": "LINE", "metricKey": key, "selectedMetricKeys": [key],
              "lineSmoothness": 0, "xAxisKey": "step", "xAxisScaleType": "linear", "scaleType": "linear",
              "selectedXAxisMetricKey": "", "range": {}, "useGlobalXaxisKey": False} for key in HEADLINE_CHARTS]
    image = {**base, "uuid": "actopt-histogram", "type": "IMAGE", "imageKeys": [HISTOGRAM_IMAGE_KEY], "step": 0,
             "showRunParams": False}
    section = {"uuid": HEADLINE_SECTION, "name": "Headline: accuracy, loss, gradient histograms", "display": True,
               "isReordered": True, "deleted": False, "isGenerated": False}
    return {"compareRunCharts": [*lines, image], "compareRunSections": [section], "isAccordionReordered": True}


def column(kind: str, name: str) -> str:
    """A runs-table column as the UI names it: ``metrics.`best_val_accuracy```."""
    return f"{kind}.`{name}`"


def study_view(parent_run_id: str, varying: Sequence[str]) -> str:
    """The runs table of a sweep's children, flat and best first, with their configuration, seed, results and
    diagnoses as columns, and its chart view opening on ``headline_charts``: the shared view's JSON."""
    params = [name for name in varying if name != "seed"] + ["seed"]
    columns = [*(column("params", name) for name in params),
               *(column("metrics", name) for name in STUDY_METRICS), *(column("tags", name) for name in STUDY_TAGS)]
    return json.dumps({"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                       "orderByKey": column("metrics", metric_names.BEST_VAL_ACCURACY), "orderByAsc": False,
                       "selectedColumns": columns, **headline_charts()})


def share_study_view(client: MlflowClient, experiment_id: str, parent_run_id: str, varying: Sequence[str]) -> None:
    client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + STUDY_VIEW, study_view(parent_run_id, varying))


def study_page_url(ui_address: str, experiment_id: str, charts: bool = False) -> str:
    """The UI address of a study's children in its shared view (``share_study_view``): the runs table, or with
    ``charts`` its chart view."""
    return ui_address.rstrip("/") + (STUDY_CHARTS_PAGE if charts else STUDY_PAGE).format(experiment_id=experiment_id)


def diagnosis_tags(checks: dict[str, diagnosis.Check]) -> dict[str, str]:
    return {DIAGNOSIS_PREFIX + rule: str(check.holds).lower() for rule, check in checks.items()}


def run_note_tags(config: TrainConfig, result: TrainResult) -> dict[str, str]:
    """The tags a finished training run gets: one ``diagnosis.<rule>`` per rule and its description."""
    checks = diagnosis.diagnose(result.history, result.diverged)
    return {**diagnosis_tags(checks), DESCRIPTION_TAG: description.run_description(config, result, checks)}


def fit(text: str, tail: str = "") -> str:
    """``text`` cut to what a tag holds, saying where the rest is (``tail``, markdown). The cut falls between
    blocks (paragraphs, list items with their sub-items, tables: what blank lines separate), a table's rows
    also between them, never inside a line: nothing ends mid-sentence or mid-number."""
    if len(text) <= MAX_DESCRIPTION:
        return text
    notice = f"\n\n… (cut to fit the description; {tail or 'the rest is not shown'})\n"
    room = MAX_DESCRIPTION - len(notice)
    kept: list[str] = []
    for block in text.split("\n\n"):
        candidate = "\n\n".join([*kept, block])
        if len(candidate) <= room:
            kept.append(block)
            continue
        # A table (or a first block too long alone) is cut between its rows; a list item stays whole.
        lines = block.split("\n") if block.startswith("|") or not kept else []
        while lines and len("\n\n".join([*kept, "\n".join(lines)])) > room:
            lines.pop()
        if lines:
            kept.append("\n".join(lines))
        break
    return "\n\n".join(kept).rstrip() + notice


def artifact_link(experiment_id: str, run_id: str, path: str) -> str:
    """A link, relative to the UI, that opens one artifact of a run in the run page's artifact viewer."""
    return ARTIFACT_PAGE.format(experiment_id=experiment_id, run_id=run_id, path=path)


def mark_experiment(client: MlflowClient, experiment_id: str, text: str | None = None) -> None:
    """Tag an experiment as model training and, when it has none yet, give it ``text`` as its description."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if text and not tags.get(DESCRIPTION_TAG):
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, fit(text))


def run_page_url(ui_address: str, experiment_id: str, run_id: str) -> str:
    return ui_address.rstrip("/") + RUN_PAGE.format(experiment_id=experiment_id, run_id=run_id)


def runs_page_url(ui_address: str, experiment_id: str, search_filter: str = "") -> str:
    """The UI address of an experiment's runs table, filtered by ``search_filter`` when given."""
    url = ui_address.rstrip("/") + RUNS_PAGE.format(experiment_id=experiment_id)
    return url + (f"&searchFilter={quote(search_filter)}" if search_filter else "")

