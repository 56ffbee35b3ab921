"""Helpers for the web UI browser tests: Debian's Chromium under Playwright, sign-in, guards and sample data."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activity_samples import llm_exchange
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from ac7_core.totp import hotp, step_at

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous: the suite runs on loaded CI boxes. Playwright waits up to this long for each condition.
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)
DESKTOP = {"width": 1280, "height": 820}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    return os.environ.get("AC7_CHROMIUM", "/usr/bin/chromium")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    if not Path(path).exists():
        raise AssertionError(f"{path} is missing: run `make browser` (apt chromium) or set AC7_CHROMIUM")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Guard:
    """Collects what must never happen on our pages: uncaught errors and CSP violations."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Trusted Type" in text:
            self.errors.append(f"console: {text}")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"pageerror: {error}")

    def watch(self, page: Page) -> Page:
        page.on("console", self.on_console)
        page.on("pageerror", self.on_page_error)
        page.on("dialog", lambda dialog: self.errors.append(f"dialog: {dialog.message}"))
        return page

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)


async def new_context(
    browser: Browser, base_url: str, *, viewport: dict[str, int] | None = None, dark: bool = False
) -> BrowserContext:
    context = await browser.new_context(
        base_url=base_url,
        viewport=viewport or DESKTOP,
        locale="en-US",
        timezone_id="UTC",
        color_scheme="dark" if dark else "light",
        device_scale_factor=1,
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    return context


def totp_code(secret: str, offset: int = 0) -> str:
    """The code of the time-step `offset` steps from now (the broker accepts ±1 step, each step once)."""
    return hotp(secret, step_at(time.time()) + offset)


async def fill_login(page: Page, code: str, slot: str | None = None) -> None:
    await page.goto("/login")
    await page.get_by_label("Authentication code").fill(code)
    if slot is not None:
        await page.get_by_label("Slot").fill(slot)
    await page.get_by_role("button", name="Sign in").click()


async def sign_in(page: Page, secret: str, slot: str | None = None, *, offset: int = 0, then: str = "/") -> None:
    """Sign in through the login form and wait for the signed-in page."""
    await fill_login(page, totp_code(secret, offset), slot)
    await page.wait_for_url(lambda url: url.endswith(then))
    await page.locator(".me-name").wait_for(state="attached")


async def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scroll)."""
    width: int = await page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
    )
    return width


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False, animations="disabled")
    return path


def trace_event(
    ts: int,
    *,
    model: str = "claude-sonnet-4-5",
    usage: tuple[int, int, int, int] = (12000, 310, 11800, 0),
    system: str = "You are Claude Code.",
    user_text: str = "Fix the failing test",
    answer: str = "Done.",
    redactions: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A valid llm_exchange (from tests/broker/activity_samples) with its interesting fields replaced."""
    event = copy.deepcopy(llm_exchange(ts=ts, text=user_text))
    entry = event["entry"]
    entry["request"]["model"] = model
    entry["response"]["model"] = model
    entry["request"]["system"] = [{"type": "text", "text": system}]
    entry["response"]["content"] = [{"type": "text", "text": answer}]
    entry["redactions"] = redactions if redactions is not None else {}
    tokens_in, tokens_out, cache_read, cache_write = usage
    entry["response"]["usage"] = {
        "inputTokens": tokens_in,
        "outputTokens": tokens_out,
        "cacheReadInputTokens": cache_read,
        "cacheCreationInputTokens": cache_write,
    }
    return event
