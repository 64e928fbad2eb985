"""What the MLflow UI shows without a click: run and experiment descriptions, diagnosis tags, the experiment's kind.

The UI renders the tag ``mlflow.note.content`` (markdown) as the description of a run, or of an
experiment when it is an experiment tag. The ``diagnosis.<rule>`` tags (``true``/``false``) let the
runs table filter, e.g. ``tags."diagnosis.dead_units" = 'true'``.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from actopt.core import description, diagnosis
from actopt.core.config import TrainConfig
from actopt.core.training import TrainResult

DESCRIPTION_TAG = "mlflow.note.content"
DIAGNOSIS_PREFIX = "diagnosis."
# MLflow 3's experiment kinds: this one means classic model training, not GenAI. The 3.17 UI decides its
# experiment page by the sidebar's GenAI / Model training switch (or ?workflowType=machine_learning) and
# reads this tag only where that switch is disabled; it is set so that such UIs open on the runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The query that opens an experiment of the 3.17 UI on its training runs (docs/diagnosis.md).
RUNS_PAGE_QUERY = "?workflowType=machine_learning"
# MLflow refuses longer tag values (mlflow.utils.validation.MAX_TAG_VAL_LENGTH is 8000).
MAX_DESCRIPTION = 8000


def diagnosis_tags(checks: dict[str, diagnosis.Check]) -> dict[str, str]:
    return {DIAGNOSIS_PREFIX + rule: str(check.holds).lower() for rule, check in checks.items()}


def run_note_tags(config: TrainConfig, result: TrainResult) -> dict[str, str]:
    """The tags a finished training run gets: one ``diagnosis.<rule>`` per rule and its description."""
    checks = diagnosis.diagnose(result.history, result.diverged)
    return {**diagnosis_tags(checks), DESCRIPTION_TAG: description.run_description(config, result, checks)}


def fit(text: str, tail: str = "") -> str:
    """``text`` cut to what a tag holds, saying where the rest is (``tail``)."""
    if len(text) <= MAX_DESCRIPTION:
        return text
    notice = f"\n\n… (cut to fit; {tail or 'the rest is not shown'})\n"
    return text[: MAX_DESCRIPTION - len(notice)] + notice


def mark_experiment(client: MlflowClient, experiment_id: str, text: str | None = None) -> None:
    """Tag an experiment as model training and, when it has none yet, give it ``text`` as its description."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if text and not tags.get(DESCRIPTION_TAG):
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, fit(text))


def runs_page_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The UI address of an experiment's runs table, when the store is a server (None for a local store)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}{RUNS_PAGE_QUERY}"
