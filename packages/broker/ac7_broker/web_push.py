"""Web Push (DESIGN §4): who gets a notification for a stored message, what it says, and sending it.

Sending is async on the broker's event loop, built from the two pieces pywebpush itself uses: the payload is
encrypted by `http_ece.encrypt` exactly as `WebPusher.encode` calls it (`web_push_crypto.encrypt_payload`) and signed
by py-vapid's `Vapid02`; the POST is ours, on one shared aiohttp session. Not pywebpush's `webpush_async`, because it
reads the whole reply into memory, follows redirects (aiohttp's default), writes `aud`/`exp` into the caller's claims
dict (a reused dict carries one push service's `aud` to the next), turns `timeout=None` into no timeout at all, and
cannot take a fixed salt and sender key for the RFC 8291 known-answer test. The CPU per send (one P-256 key pair,
one ECDH, HKDF, AES-GCM: about 0.2 ms; one ES256 signature per push-service origin every 6 h) stays on the loop rather
than in a thread pool.

`WebPushNotifier.notify` never blocks its caller: it decides the targets, queues one job per message (a bounded
queue; overflow drops the job with a warning), and a single dispatcher task looks the subscriptions up and starts
the sends, at most `concurrency` in flight. No retries: 404/410 delete the subscription; any other failure is
recorded on it (`failures`, `last_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp

from ac7_broker.store.messages import Message
from ac7_broker.store.push_subscriptions import PushSubscription, PushSubscriptionStore
from ac7_broker.web_push_crypto import VapidSigner, encrypt_payload, vapid_public_for
from ac7_broker.web_push_endpoints import PublicOnlyResolver, check_endpoint, endpoint_host, endpoint_origin
from ac7_broker.web_push_vapid import ensure_vapid_keys
from ac7_core.config_schema import WebPush

log = logging.getLogger("ac7.broker.webpush")

__all__ = [
    "WebPushNotifier",
    "build_payload",
    "ensure_vapid_keys",
    "mentioned_names",
    "push_targets",
]

ALERT_LEVELS = frozenset({"warning", "error", "critical"})
URGENT_LEVELS = frozenset({"error", "critical"})
PUSH_TTL = 3600
MAX_BODY_CHARS = 180
MAX_TITLE_CHARS = 100
MAX_SUBSCRIPTIONS_PER_SLOT = 20
DEFAULT_CONCURRENCY = 8
DEFAULT_QUEUE_LIMIT = 1024
DEFAULT_TIMEOUT = 10.0
_MAX_REPLY_BYTES = 4096
_NAME_CHARS = "A-Za-z0-9._-"


# --- policy ---------------------------------------------------------------------------------------------------------


# A maximal run of name characters after an `@` that does not itself follow a name character (`me@ivy` is an
# address). Whether that run mentions a slot is decided in `mentioned_names`.
_AT_RUN_RE = re.compile(rf"(?<![{_NAME_CHARS}])@([{_NAME_CHARS}]+)")


def mentioned_names(body: str) -> frozenset[str]:
    """The lower-cased slot names that `body` @mentions as whole words.

    `@ivy` counts when the `@` does not follow a name character (so not `me@ivy` or an e-mail address) and the
    name is not part of a longer one (`@ivybot`, `@ivy.bot`, `@ivy_2`); a sentence may end right after it
    (`thanks @ivy.`). Names compare case-insensitively.

    One pass per message, not one regex per recipient: a per-name search with a leading lookbehind rescans the
    body for every slot of the team, and took 16 % of the event loop under /push load.
    """
    if "@" not in body:
        return frozenset()
    names: set[str] = set()
    for match in _AT_RUN_RE.finditer(body):
        run = match.group(1).lower()
        names.add(run)
        # `@ivy.` at the end of a sentence names `ivy`; `@ivy.bot` names only `ivy.bot`, `@ivy..` not `ivy`.
        if run.endswith("."):
            names.add(run[:-1])
    return frozenset(names)


def push_targets(message: Message, recipients: Iterable[str], has_live_socket: Callable[[str], bool]) -> list[str]:
    """The slots to notify: never the sender nor anyone with a live socket; DMs always; broadcasts at warning or
    above, or when they @mention the slot."""
    targets = []
    mentioned: frozenset[str] | None = None
    for name in dict.fromkeys(recipients):
        if name == message.sender:
            continue
        if message.recipient is not None:
            if name != message.recipient:
                continue
        elif message.level not in ALERT_LEVELS:
            if mentioned is None:
                mentioned = mentioned_names(message.body)
            if name.lower() not in mentioned:
                continue
        if has_live_socket(name):
            continue
        targets.append(name)
    return targets


# --- payload --------------------------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_payload(message: Message) -> dict[str, Any]:
    """`{title, body, tag, url, severity, messageId}`; `tag` groups a thread's notifications, `url` opens it."""
    sender = message.sender
    if message.recipient is None:
        title, tag, url = f"{sender} → #team", "ac7:team", "/"
    else:
        title, tag, url = sender, f"ac7:dm:{sender}", f"/?dm={quote(sender, safe='')}"
    if message.title:
        title = f"{title} — {_clip(message.title, MAX_TITLE_CHARS)}"
    return {
        "title": title,
        "body": _clip(message.body, MAX_BODY_CHARS),
        "tag": tag,
        "url": url,
        "severity": message.level,
        "messageId": message.id,
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    # Not ASCII-escaped: a 180-character body of emoji is 720 bytes as UTF-8 but 2160 as \u escapes. Whatever the
    # message, the result stays far below the 3993 bytes one record can carry.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


# --- sending --------------------------------------------------------------------------------------------------------


class WebPushNotifier:
    """Queues and sends the notifications for stored messages; `close()` at shutdown."""

    def __init__(
        self,
        subscriptions: PushSubscriptionStore,
        keys: Callable[[], WebPush | None],
        *,
        allow_insecure_endpoints: bool = False,
        concurrency: int = DEFAULT_CONCURRENCY,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._store = subscriptions
        self._keys = keys
        self._allow_insecure = allow_insecure_endpoints
        self._concurrency = concurrency
        self._timeout = timeout
        self._queue: asyncio.Queue[tuple[Message, tuple[str, ...]]] = asyncio.Queue(queue_limit)
        self._slots = asyncio.Semaphore(concurrency)
        self._sending: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._signer: VapidSigner | None = None
        self._signer_for: tuple[str, str] | None = None
        self._bad_key: tuple[str, str] | None = None
        self._warned_no_keys = False
        self._closed = False
        self.dropped = 0  # jobs refused because the queue was full

    # The one call the /push handler makes, after the message is stored and delivered to live sockets.
    def notify(self, message: Message, recipients: list[str], has_live_socket: Callable[[str], bool]) -> None:
        if self._closed:
            return
        targets = push_targets(message, recipients, has_live_socket)
        if not targets:
            return
        try:
            self._queue.put_nowait((message, tuple(targets)))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "web push queue full: dropped the notification for message %s (%d dropped so far)",
                    message.id,
                    self.dropped,
                )
            return
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="web-push-dispatch")

    async def drain(self) -> None:
        """Wait until every queued notification has been sent (or has failed); for tests and shutdown."""
        while True:
            await self._queue.join()
            if not self._sending:
                return
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def close(self, grace: float = 1.0) -> None:
        """Stop taking work, give in-flight sends `grace` seconds, cancel the rest, close the HTTP session."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), grace)
        tasks = [t for t in (self._dispatcher, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _dispatch(self) -> None:
        while True:
            message, targets = await self._queue.get()
            try:
                await self._start_sends(message, targets)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web push: could not dispatch the notification for message %s", message.id)
            finally:
                self._queue.task_done()

    async def _start_sends(self, message: Message, targets: tuple[str, ...]) -> None:
        signer = self._current_signer()
        if signer is None:
            return
        subscriptions = await self._store.list_for_slots(targets)
        if not subscriptions:
            return
        payload = encode_payload(build_payload(message))
        urgency = "high" if message.level in URGENT_LEVELS else "normal"
        for sub in subscriptions:
            await self._slots.acquire()  # at most `concurrency` in flight; the queue absorbs the wait
            task = asyncio.get_running_loop().create_task(self._send(sub, payload, urgency, signer))
            self._sending.add(task)
            task.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots.release()

    def _current_signer(self) -> VapidSigner | None:
        keys = self._keys()
        if keys is None:
            if not self._warned_no_keys:
                self._warned_no_keys = True
                log.warning("web push is off: the config has no webPush keys")
            return None
        self._warned_no_keys = False
        identity = (keys.private_key, keys.subject)
        if self._signer is not None and self._signer_for == identity:
            return self._signer
        try:
            signer = VapidSigner(keys.private_key, keys.subject)
            if vapid_public_for(keys.private_key) != keys.public_key.rstrip("="):
                raise ValueError("webPush.vapidPublicKey is not the public half of webPush.vapidPrivateKey")
        except ValueError as exc:
            if self._bad_key != identity:
                self._bad_key = identity
                log.error("web push disabled: unusable VAPID key in the config (%s)", exc)
            return None
        self._signer, self._signer_for = signer, identity
        return signer

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._concurrency,
                resolver=None if self._allow_insecure else PublicOnlyResolver(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,  # no proxy or .netrc from the environment: endpoints get exactly this request
            )
        return self._session

    async def _send(self, sub: PushSubscription, payload: bytes, urgency: str, signer: VapidSigner) -> None:
        where = f"subscription {sub.id} of {sub.slot} at {endpoint_host(sub.endpoint)}"
        status: int | None = None
        error = ""
        try:
            # Re-checked at send time: a row written by a broker running with insecure endpoints allowed must not
            # be honoured by one running without.
            check_endpoint(sub.endpoint, allow_insecure=self._allow_insecure)
            body = encrypt_payload(payload, sub.p256dh, sub.auth)
            headers = {
                "TTL": str(PUSH_TTL),
                "Urgency": urgency,
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "Authorization": signer.authorization(endpoint_origin(sub.endpoint)),
            }
            async with self._client().post(sub.endpoint, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                await resp.content.read(_MAX_REPLY_BYTES)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = f"timed out after {self._timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            # Names host and port at most (never the path); says why, e.g. a refused internal address.
            error = f"connection failed: {exc.os_error.strerror or exc.os_error}"
        except aiohttp.ClientError as exc:
            error = f"connection failed: {type(exc).__name__}"
        except OSError as exc:
            error = f"connection failed: {exc.strerror or type(exc).__name__}"
        except ValueError as exc:
            error = f"cannot send: {exc}"
        except Exception as exc:  # a library failure on one subscription must not escape the task unlogged
            error = f"cannot send: {type(exc).__name__}"
        if status is not None:
            if 200 <= status < 300:
                await self._record(self._store.record_success(sub.endpoint))
                return
            if status in (404, 410):
                log.info("web push: %s is gone (HTTP %d); removed", where, status)
                await self._record(self._store.delete_by_endpoint(sub.endpoint))
                return
            error = f"HTTP {status}"
        log.warning("web push: sending to %s failed: %s", where, error)
        await self._record(self._store.record_failure(sub.endpoint, error))

    @staticmethod
    async def _record(outcome: Any) -> None:
        try:
            await outcome
        except Exception as exc:  # e.g. the store closing under a late send at shutdown
            log.debug("web push: could not record a send outcome: %s", exc)
