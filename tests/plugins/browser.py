"""pytest plugin: one headless Chromium for the browser tests (Playwright for Python).

Playwright's own browser download cannot be reached here, so it drives Debian's ``chromium`` package
(``executable_path``; ``make setup`` and ``.ci/run`` install it when /usr/bin/chromium is missing).
The flags keep a browser on a closed network quiet: no background networking, component updates,
sync or first-run work. Playwright gives every launch a fresh, empty profile (``--user-data-dir`` in
a new temporary directory) and every test its own context (cookies do not leak between principals).
Screenshots go to ``.artifacts/console/`` (gitignored) for inspection.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

logger = logging.getLogger(__name__)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "console"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser for the module that uses it (the console's browser tests: so one per test session).
    Playwright's sync API drives its own event loop on this thread while it runs: use it from plain,
    non-async tests, and it is stopped when the module ends, before pytest-asyncio's tests run again."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium package)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        logger.info("Chromium %s for the browser tests", browser.version)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
