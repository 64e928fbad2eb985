"""Analysis scaling for benchmark.py (section 3): synthetic studies of growing size, loaded and reported
on sqlite and through a local ``mlflow server``; loading, report and figures timed apart."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import history_loading

from actopt.analysis import plots
from actopt.tracking import queries

ANALYSIS_EPOCHS = 20


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


@dataclass
class AnalysisPoint:
    store: str
    runs: int
    load: float  # runs, histories and gradient histograms
    report: float  # tables, findings and report.md (the whole analysis less its figures)
    figures: float


def measure_analysis(sizes: list[int], repeats: int, with_server: bool, report: Callable[[str],
                                                                                         None]) -> list[AnalysisPoint]:
    from benchmark import local_server, tracking_store

    from actopt.analysis import analyze
    from actopt.tracking.store import connect

    points = []
    for backend in ["sqlite"] + (["server"] if with_server else []):
        for size in sizes:
            loads, reports, drawings = [], [], []
            with tempfile.TemporaryDirectory() as directory:
                folder = Path(directory)
                with local_server(folder) if backend == "server" else contextlib.nullcontext(None) as server_uri, \
                        tracking_store(server_uri, folder):
                    history_loading.log_study(connect(), size, True, "bench", epochs=ANALYSIS_EPOCHS)
                    for _ in range(repeats):
                        loading: list[float] = []
                        drawing: list[float] = []
                        with timed_function(queries, "load_runs", loading), \
                                timed_function(queries, "load_histories", loading), \
                                timed_function(queries, "load_gradient_histograms", loading), \
                                timed_function(plots, "draw_all", drawing):
                            started = time.perf_counter()
                            analyze.analyze_experiment("bench", output_dir=folder / "analysis", log=False)
                            whole = time.perf_counter() - started
                        loads.append(sum(loading))
                        drawings.append(sum(drawing))
                        reports.append(whole - loads[-1] - drawings[-1])
            points.append(AnalysisPoint(backend, size, statistics.median(loads), statistics.median(reports),
                                        statistics.median(drawings)))
            report(f"analysis, {backend}, {size} runs: load {points[-1].load:.2f} s, report {points[-1].report:.2f} s, "
                   f"figures {points[-1].figures:.2f} s")
    return points


@contextlib.contextmanager
def timed_function(module: Any, name: str, into: list[float]) -> Iterator[None]:
    original = getattr(module, name)

    def timed(*arguments: Any, **keywords: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*arguments, **keywords)
        finally:
            into.append(time.perf_counter() - started)

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)



def analysis_section(points: list[AnalysisPoint]) -> list[str]:
    lines = [
        "## 3. Analysis scaling",
        "",
        f"Synthetic runs shaped like a depth-8 MLP's (61 per-epoch keys, {ANALYSIS_EPOCHS} epochs, history.csv), "
        "each size logged into a fresh store; median seconds. 'Load' is runs, histories and gradient histograms; "
        "'report' the tables, findings and report.md; 'figures' every figure the data supports.",
        "",
        "| store | runs | load | report | figures | load + report per run, ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for point in points:
        lines.append(f"| {point.store} | {point.runs} | {point.load:.2f} | {point.report:.2f} | {point.figures:.2f} | "
                     f"{1000 * (point.load + point.report) / point.runs:.1f} |")
    server = sorted((point for point in points if point.store == "server"), key=lambda point: point.runs)
    if len(server) >= 2:
        small, large = server[0], server[-1]
        at_64 = next((point for point in server if point.runs == 64), None)
        per_run = [1000 * (point.load + point.report) / point.runs for point in server]
        lines += ["", f"Through the server, load + report takes "
                      f"{(large.load + large.report) / (small.load + small.report):.1f}× "
                  f"as long for {large.runs / small.runs:.0f}× the runs "
                  f"({', '.join(f'{value:.0f}' for value in per_run)} ms "
                  "per run)."]
        if at_64 is not None:
            seconds = at_64.load + at_64.report
            lines.append(f"64 runs: {seconds:.2f} s to load and report (target ≤ 5 s: {verdict(seconds <= 5)}), "
                         f"{at_64.figures:.2f} s more for the figures.")
    return lines
