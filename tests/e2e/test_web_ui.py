"""The web UI (DESIGN §8) in a real browser: Debian's Chromium driven by Playwright against a real broker.

Each test starts its own broker (tests/broker/broker_harness.py) and its own Chromium. Nothing is timed: every
wait is Playwright's auto-waiting for a condition, with a generous ceiling.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from ac7_auth_helpers import call, code_for, login, wrong_code
from activity_samples import TS, opaque_http
from aiohttp import web
from broker_harness import TEST_SETTINGS, Running, Team
from playwright.async_api import Browser, Page, expect
from push_service_fake import FakePushService, push_service, vapid_public_key, web_push_broker
from ui_helpers import (
    PHONE,
    Guard,
    chromium,
    fill_login,
    horizontal_overflow,
    new_context,
    screenshot,
    sign_in,
    totp_code,
    trace_event,
)

from ac7_broker.server import start_broker

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
XSS = "<img src=x onerror=alert(1)>"
__all__ = ["push_service", "web_push_broker"]  # fixtures


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def guard() -> Guard:
    return Guard()


async def open_page(browser: Browser, broker: Running, guard: Guard, **kwargs: Any) -> Page:
    context = await new_context(browser, broker.url, **kwargs)
    return guard.watch(await context.new_page())


async def push(broker: Running, sender: str, body: str, to: str | None = None, **extra: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        payload: dict[str, Any] = {"body": body, **extra}
        if to is not None:
            payload["to"] = to
        reply = await call(s, "POST", f"{broker.url}/push", json=payload, headers=broker.auth(sender))
        assert reply.status == 201, reply.body
        return dict(reply.body["message"])


async def upload(broker: Running, agent: str, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as s:
        reply = await call(
            s, "POST", f"{broker.url}/agents/{agent}/activity", json={"events": events}, headers=broker.auth(agent)
        )
        assert reply.status == 201, reply.body


async def bodies_seen_by(broker: Running, slot: str) -> list[str]:
    async with aiohttp.ClientSession() as s:
        reply = await call(s, "GET", f"{broker.url}/history?limit=1000", headers=broker.auth(slot))
        assert reply.status == 200
        return [m["body"] for m in reply.body["messages"]]


# --- server side: pages, assets, headers -----------------------------------------------------------------------------


async def test_pages_redirect_without_a_session_and_carry_security_headers(
    broker: Running, http: aiohttp.ClientSession
) -> None:
    for path, location in [("/", "/login"), ("/agents/ivy", "/login?next=/agents/ivy"), ("/?dm=mike", None)]:
        async with http.get(broker.url + path, allow_redirects=False) as r:
            assert r.status == 302, path
            assert r.headers["Location"] == (location or "/login?next=/%3Fdm%3Dmike")
    async with http.get(broker.url + "/login") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        assert r.headers["Content-Security-Policy"].startswith(CSP)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Frame-Options"] == "DENY"
        html = await r.text()
    # No inline script or style anywhere: every script and stylesheet is a same-origin file.
    assert "<style" not in html and "style=" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/login.js">']

    async with http.get(broker.url + "/static/index.js") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        etag = r.headers["ETag"]
    async with http.get(broker.url + "/static/index.js", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    async with http.get(broker.url + "/static/style.css") as r:
        assert r.headers["Content-Type"] == "text/css; charset=utf-8"
    async with http.get(broker.url + "/sw.js") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert "addEventListener('push'" in await r.text()
    for probe in [
        "/static/..%2Fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/../routes/pages.py",
        "/static/pages.py",
        "/static/login.html",
        "/static/sw.js",
        "/static/.hidden.js",
        "/static/nope.js",
        "/agents/bad%20name",
    ]:
        async with http.get(broker.url + probe, allow_redirects=False) as r:
            assert r.status == 404, probe

    reply = await login(http, broker.url, code_for(broker.team.totp["alice"]), "alice")
    assert reply.status == 200
    async with http.get(broker.url + "/", allow_redirects=False) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert "/static/index.js" in await r.text()
    async with http.get(broker.url + "/agents/dan", allow_redirects=False) as r:
        assert r.status == 200  # the shell; the API decides (and refuses) what it may show
    async with http.get(broker.url + "/login", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (302, "/")


# --- signing in ----------------------------------------------------------------------------------------------------


async def test_login_with_a_totp_code_and_a_replayed_code_is_refused(
    broker: Running, browser: Browser, guard: Guard
) -> None:
    secret = broker.team.totp["alice"]
    code = totp_code(secret)
    first = await open_page(browser, broker, guard)
    await fill_login(first, code, "alice")
    await first.wait_for_url(lambda url: url.endswith("/"))
    await expect(first.locator(".me-name")).to_have_text("alice")
    session = await first.context.request.get("/session")
    assert (await session.json())["slot"] == "alice"

    second = await open_page(browser, broker, guard)
    async with second.expect_response(lambda r: r.url.endswith("/session/totp")) as answer:
        await fill_login(second, code, "alice")
    assert (await answer.value).status == 401
    await expect(second.get_by_role("alert")).to_contain_text("not accepted")
    await expect(second.get_by_role("alert")).to_contain_text("only once")
    assert second.url.endswith("/login")
    assert (await second.context.request.get("/session")).status == 401
    guard.check()


async def test_lockout_shows_the_wait_from_retry_after(
    broker: Running, browser: Browser, guard: Guard, http: aiohttp.ClientSession
) -> None:
    secret = broker.team.totp["hana"]
    for _ in range(5):
        assert (await login(http, broker.url, wrong_code(secret), "hana")).status == 401
    page = await open_page(browser, broker, guard)
    async with page.expect_response(lambda r: r.url.endswith("/session/totp")) as answer:
        await fill_login(page, totp_code(secret), "hana")  # the right code, but the slot is locked
    response = await answer.value
    assert response.status == 429
    minutes = int(response.headers["retry-after"]) // 60
    assert minutes >= 14
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("locked")
    await expect(alert).to_contain_text(re.compile(r"try again in 1[45] min"))
    await expect(page.get_by_role("button", name="Sign in")).to_be_disabled()
    guard.check()


async def test_logout_ends_the_session(broker: Running, browser: Browser, guard: Guard) -> None:
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["alice"], "alice")
    assert (await page.context.request.get("/session")).status == 200
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(lambda url: url.endswith("/login"))
    assert (await page.context.request.get("/session")).status == 401
    await page.goto("/")
    await page.wait_for_url(lambda url: url.endswith("/login"))
    guard.check()


# --- messages ------------------------------------------------------------------------------------------------------


async def test_dm_sent_in_one_browser_arrives_live_in_another(broker: Running, browser: Browser, guard: Guard) -> None:
    alice = await open_page(browser, broker, guard)
    await sign_in(alice, broker.team.totp["alice"], "alice")
    mike = await open_page(browser, broker, guard)
    await sign_in(mike, broker.team.totp["mike"], "mike")
    # mike has the DM thread with alice open (as a notification click would: /?dm=<slot>) and never reloads.
    await mike.goto("/?dm=alice")
    await expect(mike.locator(".thread-title h1")).to_have_text("alice")
    await expect(mike.locator(".live-pill")).to_have_attribute("data-state", "live")
    await mike.evaluate("window.__notReloaded = true")

    await alice.locator('.roster-item[data-slot="mike"] .nav-item').click()
    await expect(alice.locator(".thread-title h1")).to_have_text("mike")
    assert alice.url.endswith("/?dm=mike")
    await alice.get_by_label("Message", exact=True).fill("Can you review PR 42?\nIt touches billing.")
    await alice.get_by_label("Message", exact=True).press("Enter")
    await expect(alice.locator(".msg-body").last).to_have_text("Can you review PR 42?\nIt touches billing.")

    arrived = mike.locator(".msg-body", has_text="Can you review PR 42?")
    await expect(arrived).to_have_count(1)
    await expect(mike.locator(".msg").last.locator(".msg-from")).to_have_text("alice")
    assert await mike.evaluate("window.__notReloaded") is True

    # A broadcast lands in the team channel, with an unread badge while mike is elsewhere.
    await push(broker, "ivy", "CI is green on main", level="notice")
    await expect(mike.locator('.nav-item[data-key="team"] .unread')).to_have_text("1")
    await mike.locator('.nav-item[data-key="team"]').click()
    await expect(mike.locator(".msg-body", has_text="CI is green on main")).to_be_visible()
    await expect(mike.locator('.nav-item[data-key="team"] .unread')).to_have_count(0)
    assert await mike.evaluate("window.__notReloaded") is True
    guard.check()


async def test_message_markup_renders_as_text(broker: Running, browser: Browser, guard: Guard) -> None:
    await push(broker, "ivy", XSS, title="<b>bold?</b>")  # in history when the page loads
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["alice"], "alice")
    messages = page.locator("#messages")
    await expect(messages.locator(".msg-body", has_text=XSS)).to_have_count(1)
    await expect(messages.locator(".msg-title")).to_have_text("<b>bold?</b>")
    await push(broker, "ivy", f"live {XSS}", to="alice")  # and one arriving over the socket
    await page.locator('.nav-item[data-key="dm:ivy"]').click()
    await expect(messages.locator(".msg-body")).to_have_text(f"live {XSS}")
    assert await page.locator("#messages img, #messages b").count() == 0
    guard.check()  # no alert() dialog, no CSP violation, no error


async def test_roster_shows_presence_and_busy_live(broker: Running, browser: Browser, guard: Guard) -> None:
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["alice"], "alice")
    ivy = page.locator('.roster-item[data-slot="ivy"]')
    await expect(ivy).to_have_attribute("data-presence", "offline")
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=ivy", headers=broker.auth("ivy"))
        await expect(ivy).to_have_attribute("data-presence", "online")
        reply = await call(s, "POST", f"{broker.url}/presence/busy", json={"busy": True}, headers=broker.auth("ivy"))
        assert reply.status == 204
        await expect(ivy).to_have_attribute("data-presence", "busy")
        await expect(ivy.locator(".dot")).to_have_class(re.compile(r"\bdot-busy\b"))
        await call(s, "POST", f"{broker.url}/presence/busy", json={"busy": False}, headers=broker.auth("ivy"))
        await ws.close()
    await expect(ivy).to_have_attribute("data-presence", "offline")
    guard.check()


async def test_live_feed_reconnects_after_a_broker_restart(team: Team, browser: Browser, guard: Guard) -> None:
    first = await start_broker(team.config_path, "127.0.0.1", 0, TEST_SETTINGS)
    port = int(first.url.rsplit(":", 1)[1])
    second = None
    try:
        running = Running(team, first)
        page = await open_page(browser, running, guard)
        await sign_in(page, team.totp["alice"], "alice")
        pill = page.locator(".live-pill")
        await expect(pill).to_have_attribute("data-state", "live")
        await first.stop()
        await expect(pill).to_have_attribute("data-state", "reconnecting")
        # Same config, same database (so the same session), same port: the page finds it again by itself.
        second = await start_broker(team.config_path, "127.0.0.1", port, TEST_SETTINGS)
        await expect(pill).to_have_attribute("data-state", "live")
        await push(Running(team, second), "mike", "back after the restart")
        await expect(page.locator(".msg-body", has_text="back after the restart")).to_be_visible()
        guard.check()
    finally:
        if second is not None:
            await second.stop()
        else:
            await first.stop()


# --- traces --------------------------------------------------------------------------------------------------------


async def test_director_reviews_an_agents_traces(broker: Running, browser: Browser, guard: Guard) -> None:
    event = trace_event(
        TS,
        usage=(12345, 678, 9012, 345),
        system="You are Claude Code. Deploy key: [REDACTED:anthropic-api-key] (never share it).",
        user_text="Run the tests with token [REDACTED:github-pat] please",
        answer="All 42 tests pass.",
        redactions={"anthropic-api-key": 1, "github-pat": 1},
    )
    await upload(broker, "ivy", [opaque_http(TS - 5000, "/v1/rgstr/telemetry"), event])
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["alice"], "alice")
    await page.locator('.roster-item[data-slot="ivy"] .roster-traces').click()
    await page.wait_for_url(lambda url: url.endswith("/agents/ivy"))

    row = page.locator(".trace").first
    summary = row.locator(".trace-row")
    await expect(summary.locator(".tc-model")).to_have_text("claude-sonnet-4-5")
    await expect(summary.locator(".tc-in .tc-value")).to_have_text("12,345")
    await expect(summary.locator(".tc-out .tc-value")).to_have_text("678")
    await expect(summary.locator(".tc-cache .tc-value")).to_have_text("9,012")
    await expect(summary.locator(".tc-cache .tc-sub")).to_have_text("+345 w")
    await expect(summary.locator(".tc-dur .tc-value")).to_have_text("1.83 s")
    await expect(summary.locator(".tc-ttft .tc-value")).to_have_text("480 ms")
    await expect(summary.locator(".tc-stop")).to_have_text("end_turn")
    await expect(summary.locator(".badge-redaction")).to_have_text("2 redacted")

    # Totals per day, an estimated cost clearly labelled as such, and the chart.
    day = page.locator(".totals tbody tr").first
    await expect(day.locator("td")).to_have_text(["1", "12,345", "678", "9,012", "345", re.compile(r"≈ \$0\.05")])
    await expect(page.locator(".totals thead")).to_contain_text("Est. cost*")
    await expect(page.locator(".estimate-note")).to_contain_text("not a bill")
    await expect(page.locator("svg.chart rect.series-input")).to_have_count(1)

    detail = row.locator(".trace-detail")
    await expect(detail).to_be_hidden()
    await summary.click()
    await expect(detail).to_be_visible()
    await expect(detail.locator(".system-prompt")).to_contain_text("You are Claude Code. Deploy key:")
    await expect(detail.locator(".turn-user").first).to_contain_text("Run the tests with token")
    tool_call = detail.locator(".blk-tool-use")
    await expect(tool_call.locator(".tool-name")).to_have_text("Bash")
    await expect(tool_call.locator("pre")).to_contain_text('"command": "pytest -q"')
    result = detail.locator(".blk-tool-result")
    await expect(result).to_contain_text("1 failed")
    await expect(result).to_contain_text("from Bash")
    await expect(result.locator(".badge-error")).to_have_text("error")
    await expect(detail.locator(".blk-thinking")).to_contain_text("Look at the test first.")
    await expect(detail.locator(".blk-image")).to_contain_text("image/png")
    await expect(detail.locator(".turn-assistant").last).to_contain_text("All 42 tests pass.")

    marker = detail.locator(".system-prompt mark.redaction")
    await expect(marker).to_have_text("[REDACTED:anthropic-api-key]")
    await expect(detail.locator(".turn-user mark.redaction")).to_have_text("[REDACTED:github-pat]")
    styled = await marker.evaluate(
        "el => { const s = getComputedStyle(el); return [s.backgroundImage, s.borderTopStyle, s.fontFamily]; }"
    )
    assert "gradient" in styled[0] and styled[1] == "solid" and "mono" in styled[2].lower(), styled

    # Other traced requests are one click away.
    await expect(page.locator(".trace")).to_have_count(1)
    await page.get_by_role("button", name="All requests").click()
    await expect(page.locator(".trace")).to_have_count(2)
    http_row = page.locator(".trace-opaque_http")
    await expect(http_row.locator(".tc-model")).to_have_text("HTTP POST statsig.anthropic.com/v1/rgstr/telemetry")
    await expect(http_row.locator(".tc-stop")).to_have_text("202")
    await http_row.locator(".trace-row").click()
    await expect(http_row.locator(".trace-detail")).to_contain_text('{"events":[]}')
    await page.get_by_role("button", name="LLM calls").click()
    await expect(page.locator(".trace")).to_have_count(1)

    # A new exchange appears without a reload (the activity stream).
    await page.evaluate("window.__notReloaded = true")
    await upload(broker, "ivy", [trace_event(TS + 60_000, model="claude-opus-4-1", usage=(77, 88, 0, 0))])
    await expect(page.locator(".trace").first.locator(".tc-model")).to_have_text("claude-opus-4-1")
    await expect(page.locator(".trace")).to_have_count(2)
    await expect(page.locator(".totals tbody tr").first.locator("td").first).to_have_text("2")
    assert await page.evaluate("window.__notReloaded") is True
    guard.check()


async def test_trace_markup_renders_as_text(broker: Running, browser: Browser, guard: Guard) -> None:
    await upload(broker, "ivy", [trace_event(TS, system=XSS, user_text=f"<script>alert(2)</script>{XSS}")])
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["ivy"], "ivy", then="/")
    await page.goto("/agents/ivy")
    await page.locator(".trace-row").first.click()
    detail = page.locator(".trace-detail").first
    await expect(detail.locator(".system-prompt")).to_have_text(XSS)
    await expect(detail.locator(".turn-user").first).to_contain_text(f"<script>alert(2)</script>{XSS}")
    assert await detail.locator("img, script").count() == 0
    guard.check()


async def test_individual_contributor_cannot_see_another_agents_traces(
    broker: Running, browser: Browser, guard: Guard
) -> None:
    await upload(broker, "ivy", [trace_event(TS)])
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["ivy"], "ivy")
    # The roster offers traces only where the API would answer: ivy's own.
    await expect(page.locator('.roster-item[data-slot="ivy"] .roster-traces')).to_have_count(1)
    await expect(page.locator(".roster-traces")).to_have_count(1)
    await page.locator('.roster-item[data-slot="dan"] .nav-item').click()
    await expect(page.locator(".thread-traces")).to_have_count(0)

    async with page.expect_response(lambda r: "/agents/dan/activity" in r.url) as answer:
        await page.goto("/agents/dan")
    response = await answer.value
    assert response.status == 403
    assert (await response.json())["code"] == "forbidden"
    state = page.locator(".state-forbidden")
    await expect(state.get_by_role("heading")).to_have_text("Not allowed")
    await expect(state).to_contain_text("Only dan itself or a director")
    await expect(page.locator(".trace")).to_have_count(0)

    await state.get_by_role("link", name="See your own traces").click()
    await page.wait_for_url(lambda url: url.endswith("/agents/ivy"))
    await expect(page.locator(".trace")).to_have_count(1)
    guard.check()


# --- cross-site requests -------------------------------------------------------------------------------------------


@pytest.fixture
async def evil_site() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Another origin (another port on loopback) serving pages that auto-submit forms to the broker."""
    pages: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.match_info["name"]], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", pages
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("enctype", ["text/plain", "application/x-www-form-urlencoded"])
async def test_cross_site_form_post_is_refused(
    broker: Running, browser: Browser, evil_site: tuple[str, dict[str, str]], enctype: str
) -> None:
    evil_url, evil_pages = evil_site
    # text/plain with this name/value pair sends exactly {"body":"forged="} (the classic JSON CSRF trick).
    evil_pages["attack"] = (
        f'<!doctype html><form method="post" action="{broker.url}/push" enctype="{enctype}">'
        '<input type="hidden" name=\'{"body":"forged\' value=\'"}\'></form>'
        "<script>document.forms[0].submit()</script>"
    )
    guard = Guard()
    page = await open_page(browser, broker, guard)
    await sign_in(page, broker.team.totp["alice"], "alice")  # the victim is signed in
    async with (
        page.expect_request(lambda r: r.url == f"{broker.url}/push") as sent,
        page.expect_response(lambda r: r.url == f"{broker.url}/push") as answer,
    ):
        await page.goto(f"{evil_url}/attack")
    request = await sent.value
    headers = await request.all_headers()
    # Another port on the same host is the same *site*, so SameSite=Strict still sends the cookie: only the
    # broker's Fetch-Metadata check stands between this form and a message sent as alice.
    assert "ac7_session=" in headers.get("cookie", "")
    assert headers.get("sec-fetch-site") == "same-site"
    response = await answer.value
    assert response.status == 403
    assert (await response.json())["code"] == "csrf_denied"
    assert not any("forged" in body for body in await bodies_seen_by(broker, "mike"))


# --- push notifications ----------------------------------------------------------------------------------------------


async def test_push_toggle_degrades_when_the_broker_has_no_push(broker: Running, browser: Browser) -> None:
    guard = Guard()
    page = await open_page(browser, broker, guard)
    await page.route(
        "**/push/vapid-public-key", lambda route: route.fulfill(status=404, json={"error": "no", "code": "not_found"})
    )
    await sign_in(page, broker.team.totp["alice"], "alice")
    toggle = page.locator(".push-toggle")
    await expect(toggle).to_have_attribute("data-state", "unavailable")
    await expect(toggle).to_be_disabled()
    await expect(toggle).to_have_attribute("aria-label", re.compile("not enabled on this broker"))
    # Everything else works as usual.
    await expect(page.locator(".live-pill")).to_have_attribute("data-state", "live")
    guard.check()


# Headless Chromium has no push service to subscribe with, so the page gets a stand-in PushManager whose
# subscription is one the loopback fake push service can decrypt for: everything else is real (the toggle, the
# broker's subscription endpoints and Web Push sending, the service worker, the notification, the click routing).
FAKE_PUSH_MANAGER = """
(() => {
  const fake = %s;
  let current = null;
  const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  PushManager.prototype.subscribe = async function (options) {
    const key = options.applicationServerKey;
    const buffer = key instanceof ArrayBuffer ? key : key.buffer.slice(key.byteOffset, key.byteOffset + key.byteLength);
    window.__subscribedWith = { key: b64u(buffer), userVisibleOnly: options.userVisibleOnly };
    current = {
      endpoint: fake.endpoint,
      expirationTime: null,
      options: { applicationServerKey: buffer, userVisibleOnly: true },
      toJSON: () => JSON.parse(JSON.stringify(fake)),
      unsubscribe: async () => { current = null; window.__unsubscribed = true; return true; },
    };
    return current;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""


# Records each showNotification() the worker makes and how it ended, wrapping the browser's own method.
SPY_ON_SHOW_NOTIFICATION = """() => {
    self.__shown = [];
    const real = self.registration.showNotification.bind(self.registration);
    self.registration.showNotification = (title, options) => {
        const entry = {title, body: options.body, tag: options.tag, url: options.data.url, outcome: 'pending'};
        self.__shown.push(entry);
        return real(title, options).then(
            () => { entry.outcome = 'shown'; },
            (err) => { entry.outcome = String(err); throw err; },
        );
    };
}"""


async def _deliver_to_service_worker(page: Page, base_url: str, data: bytes) -> None:
    """Hand a push message's plaintext to the page's service worker, as the browser's push service would."""
    cdp = await page.context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    await cdp.send("ServiceWorker.enable")
    async with asyncio.timeout(20):
        while not any(r["scopeURL"] == f"{base_url}/" and not r["isDeleted"] for r in registrations):
            await asyncio.sleep(0.05)
    registration = next(r for r in registrations if r["scopeURL"] == f"{base_url}/")
    await cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": base_url, "registrationId": registration["registrationId"], "data": data.decode()},
    )


async def test_push_notifications_from_toggle_to_click(
    web_push_broker: Running, push_service: FakePushService, browser: Browser, guard: Guard
) -> None:
    broker = web_push_broker
    store = broker.broker.state.store.push
    async with aiohttp.ClientSession() as s:
        key = await vapid_public_key(s, broker)
    device = push_service.new_subscription(key)
    page = await open_page(browser, broker, guard)
    await page.context.grant_permissions(["notifications"], origin=broker.url)
    await page.add_init_script(FAKE_PUSH_MANAGER % json.dumps(device.subscription_json()))
    await sign_in(page, broker.team.totp["alice"], "alice")
    worker = await page.evaluate(
        "async () => { const r = await navigator.serviceWorker.ready; return r.active.scriptURL + ' ' + r.scope; }"
    )
    assert worker == f"{broker.url}/sw.js {broker.url}/"

    # Turn notifications on: subscribed with the broker's VAPID key, and registered with the broker.
    toggle = page.locator(".push-toggle")
    await expect(toggle).to_have_attribute("data-state", "off")
    async with page.expect_response(lambda r: r.url.endswith("/push/subscriptions")) as created:
        await toggle.click()
    assert (await created.value).status == 201
    await expect(toggle).to_have_attribute("data-state", "on")
    assert await page.evaluate("window.__subscribedWith") == {"key": key, "userVisibleOnly": True}
    [row] = await store.list_for_slot("alice")
    assert row.endpoint == device.endpoint

    # With no message socket open (the traces page has none), a DM to alice is pushed to her device...
    await page.goto("/agents/alice")
    await expect(page.locator(".trace-list .empty")).to_be_visible()
    await push(broker, "mike", "Can you look at the deploy?", to="alice")
    [request] = await push_service.wait_for(1, device)
    payload = request.json()
    assert payload["url"] == "/?dm=mike"

    # ...its service worker shows it...
    # Headless Chromium sometimes drops a notification from getNotifications() right after showNotification()
    # resolved (measured: 1 run in 4, and a second identical push then sticks), so the test watches the worker's
    # own call instead: exactly one push event, one showNotification() with these arguments, and it resolved.
    [service_worker] = page.context.service_workers
    await service_worker.evaluate(SPY_ON_SHOW_NOTIFICATION)
    await _deliver_to_service_worker(page, broker.url, request.plaintext)
    async with asyncio.timeout(20):
        while not (calls := await service_worker.evaluate("self.__shown")) or calls[-1]["outcome"] == "pending":
            await asyncio.sleep(0.05)
    assert calls == [
        {
            "title": payload["title"],
            "body": "Can you look at the deploy?",
            "tag": payload["tag"],
            "url": f"{broker.url}/?dm=mike",
            "outcome": "shown",
        }
    ]
    # ...and a click opens the DM thread in the open window. (A system notification cannot be clicked from a
    # script, so the worker's click handler's routing is called directly.)
    await service_worker.evaluate("url => self.openFromNotification(url)", payload["url"])
    await page.wait_for_url(lambda url: url.endswith("/?dm=mike"))
    await expect(page.locator(".thread-title h1")).to_have_text("mike")
    await expect(page.locator(".msg-body", has_text="Can you look at the deploy?")).to_be_visible()

    # Turning it off removes the subscription from the broker and the browser.
    await expect(toggle).to_have_attribute("data-state", "off")  # a fresh document: the stand-in forgot it
    async with page.expect_response(lambda r: r.url.endswith("/push/subscriptions")) as created:
        await toggle.click()
    await expect(toggle).to_have_attribute("data-state", "on")
    async with page.expect_response(lambda r: "/push/subscriptions/" in r.url) as deleted:
        await toggle.click()
    assert (await deleted.value).status == 204
    await expect(toggle).to_have_attribute("data-state", "off")
    assert await page.evaluate("window.__unsubscribed") is True
    assert await store.list_for_slot("alice") == []

    # Signing out stops this device's notifications for the slot too.
    await toggle.click()
    await expect(toggle).to_have_attribute("data-state", "on")
    assert len(await store.list_for_slot("alice")) == 1
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(lambda url: url.endswith("/login"))
    assert await store.list_for_slot("alice") == []
    guard.check()


# --- layout --------------------------------------------------------------------------------------------------------

LONG = "x" * 300  # an unbreakable run, the usual cause of a page wider than the phone


async def _populate(broker: Running) -> None:
    await push(broker, "alice", "Morning all. Today: finish the invoice export and get PR 42 merged.", title="Plan")
    await push(broker, "ivy", "Picked up the invoice export. Starting with the failing currency test.")
    await push(broker, "dan", f"Build log excerpt: {LONG}", level="warning")
    await push(broker, "mike", "Reviewing PR 42 now.", to="alice")
    await push(broker, "ivy", "Tests green locally; pushing.", level="notice")
    await push(broker, "ivy", "ci: deploy to staging failed (exit 1)", level="error")
    day = 86_400_000
    base = TS - 2 * day
    events = []
    models = ["claude-sonnet-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    for i in range(14):
        events.append(
            trace_event(
                base + i * 4 * 3_600_000,
                model=models[i % len(models)],
                usage=(1500 + 900 * (i % 5), 200 + 150 * (i % 4), 20_000 + 4000 * (i % 3), 3000 if i % 6 == 0 else 0),
                system="You are Claude Code, Anthropic's official CLI for Claude.\n\nEnvironment: "
                f"ANTHROPIC_API_KEY=[REDACTED:anthropic-api-key]\n{LONG}",
                user_text=f"Fix the currency rounding test (call {i}); token [REDACTED:github-pat]",
                answer="I'll run the tests first.",
                redactions={"anthropic-api-key": 1, "github-pat": 1},
            )
        )
    await upload(broker, "ivy", events)


async def test_phone_width_has_no_horizontal_scroll(broker: Running, browser: Browser, guard: Guard) -> None:
    await _populate(broker)
    page = await open_page(browser, broker, guard, viewport=PHONE)
    await sign_in(page, broker.team.totp["alice"], "alice")
    await expect(page.locator(".msg-body", has_text="Build log excerpt")).to_be_visible()
    assert await horizontal_overflow(page) == 0
    await page.get_by_role("button", name="All conversations").click()
    await expect(page.locator("#roster")).to_be_visible()
    assert await horizontal_overflow(page) == 0
    await screenshot(page, "conversations-phone")
    await page.goto("/agents/ivy")
    await page.locator(".trace-row").first.click()
    await expect(page.locator(".trace-detail").first).to_be_visible()
    assert await horizontal_overflow(page) == 0
    guard.check()


@pytest.mark.parametrize(
    ("label", "viewport", "dark"),
    [("desktop", None, False), ("desktop-dark", None, True), ("phone", PHONE, False), ("phone-dark", PHONE, True)],
)
async def test_screenshots(
    broker: Running, browser: Browser, guard: Guard, label: str, viewport: dict[str, int] | None, dark: bool
) -> None:
    """Screenshots of each page for a human to look at, in test-artifacts/screenshots/."""
    await _populate(broker)
    page = await open_page(browser, broker, guard, viewport=viewport, dark=dark)
    await page.goto("/login")
    await expect(page.get_by_label("Authentication code")).to_be_focused()
    await screenshot(page, f"login-{label}")
    await sign_in(page, broker.team.totp["alice"], "alice")
    await expect(page.locator(".msg-body", has_text="deploy to staging failed")).to_be_visible()
    await expect(page.locator(".live-pill")).to_have_attribute("data-state", "live")
    await screenshot(page, f"messages-{label}")
    await page.goto("/agents/ivy")
    await expect(page.locator(".trace")).to_have_count(14)
    await expect(page.locator("svg.chart")).to_be_visible()
    await screenshot(page, f"traces-{label}")
    await page.locator(".trace-row").first.click()
    await expect(page.locator(".trace-detail").first).to_be_visible()
    await page.evaluate("document.querySelector('.trace').scrollIntoView({block: 'start'})")
    await screenshot(page, f"traces-expanded-{label}")
    guard.check()
