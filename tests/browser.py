"""The page tests' browser: Debian's Chromium, headless, driven by Playwright, kept off the network beyond the
pages a test opens (no background updates, sync or first-run pages)."""

from __future__ import annotations

import contextlib
import shutil
from typing import Iterator

from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
