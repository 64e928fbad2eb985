"""What the analysis concludes from the study's frames: the questions judged as one family, and every finding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actopt.analysis import decisions, depth_theory, multiplicity
from actopt.analysis.derive import Frames, Logged, derive_frames
from actopt.analysis.findings import findings
from actopt.analysis.frames import Finding
from actopt.analysis.questions import Question, comparisons_needed, default_questions


@dataclass(frozen=True)
class Judged:
    """What the questions got: the questions, the decisions of their comparisons, and the adjustment used."""

    questions: tuple[Question, ...]
    decisions: tuple[decisions.Decision, ...]
    method: str = multiplicity.DEFAULT_METHOD


def judge(frames: Frames, questions: Sequence[Question] = (), method: str = multiplicity.DEFAULT_METHOD) -> Judged:
    """The study's questions (or the defaults), every comparison they need, decided as one family."""
    table = frames.table
    chosen = tuple(questions) or tuple(default_questions(table))
    made = decisions.decide(comparisons_needed(chosen, table, frames.tuned), table, method, tuned=frames.tuned)
    return Judged(chosen, tuple(made), method)


def decision_findings(judged: Judged) -> list[Finding]:
    """The decided pairs as findings, so that the analysis run counts them with the rules' findings."""
    return [Finding("Decisions", decisions.verdict(item, judged.method), judged.method) for item in judged.decisions
            if item.decided]


@dataclass(frozen=True, eq=False)
class Study:
    """The frames, the judged questions, and every finding (rules, theory, groups with nothing to compare)."""

    frames: Frames
    judged: Judged
    found: tuple[Finding, ...]

    def holding(self) -> list[Finding]:
        """What the analysis run counts: the findings that hold, and the decided pairs."""
        return [*(item for item in self.found if item.kind == "holds"), *decision_findings(self.judged)]


def conclude(logged: Logged, questions: Sequence[Question] = (), method: str = multiplicity.DEFAULT_METHOD) -> Study:
    """Everything the report and the figures need, answering ``questions`` (by default one per varying parameter)
    with their comparisons adjusted by ``method``."""
    frames = derive_frames(logged)
    judged = judge(frames, questions, method)
    found = (*findings(frames), *depth_theory.theory_findings(frames.theory),
             *decisions.unlearned_groups(list(judged.questions), frames.table, frames.tuned))
    return Study(frames, judged, found)
