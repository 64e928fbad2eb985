"""The benchmark script still runs end to end (quick mode, tiny data); its timings are never asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_every_section_and_leaves_the_users_store_alone(tmp_path, data_dir, tracking_store):
    output = tmp_path / "RESULTS.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--quick", "--data-dir", str(data_dir),
         "--output", str(output)],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store}, capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = output.read_text()
    assert "quick mode" in text and "Machine:" in text
    for heading in ("## 1. Training throughput", "## 2. Sweep throughput", "## 3. Analysis scaling",
                    "## 4. Logging overhead"):
        assert heading in text
    for row in ("(a) seed-style loop", "(b) actopt, no gradient statistics", "(c) actopt, everything on",
                "arithmetic limit", "actopt sweep, 1 worker", "seed-style loop, one by one"):
        assert re.search(rf"\| {re.escape(row)}[^|]*\| \d+\.\d+ \|", text), row
    assert re.search(r"\| sqlite \| 6 \| \d+\.\d\d \| -?\d+\.\d\d \| \d+\.\d\d \|", text)
    assert re.search(r"\| server \| 6 \| \d+\.\d\d \|", text)
    assert re.search(r"\| server \| \d\.\d{4} s \| \d+\.\d%", text)
    client = MlflowClient(tracking_store)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments)
