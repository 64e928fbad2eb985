"""Headless Chromium (Debian's ``chromium`` package) on a page of the MLflow UI: its rendered DOM, or a screenshot.

Each call starts a fresh browser with a fresh profile, so that no earlier choice (the UI remembers its
GenAI / Model training switch in the browser's storage) changes what a page shows. The UI is a
single-page app that fetches after load: ``--virtual-time-budget`` lets its requests finish first.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
# Milliseconds of page time the browser lets pass before it reads the page: the UI's requests to a local
# server answer in well under this.
PAGE_TIME_MS = 20000
WINDOW = "1500,950"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_browser(url: str, *arguments: str, window: str = WINDOW, timeout: float = 120) -> str:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="actopt-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                   f"--virtual-time-budget={PAGE_TIME_MS}", *arguments, url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def rendered_dom(url: str) -> str:
    return run_browser(url, "--dump-dom")


def screenshot(url: str, path: Path, window: str = WINDOW) -> Path:
    run_browser(url, f"--screenshot={path}", window=window)
    return path
