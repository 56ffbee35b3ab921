"""Tunable limits of one broker process. Defaults are the documented behaviour; tests shrink the timings."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    max_body: int = 1 * MIB
    max_activity_body: int = 16 * MIB
    # WebSockets: a ping every `ping_interval`; a peer that sends nothing (not even a pong) for `peer_timeout` is
    # dropped. A socket whose unsent backlog exceeds `send_queue` frames or `send_queue_bytes` is closed rather
    # than left to grow.
    ping_interval: float = 30.0
    peer_timeout: float = 60.0
    send_queue: int = 1024
    send_queue_bytes: int = 16 * MIB
    busy_ttl: float = 30.0
    session_ttl_ms: int = 7 * 24 * 3600 * 1000
    # Login lockouts (DESIGN §4): failures within a fixed window anchored at the first failure.
    login_window: float = 15 * 60.0
    login_slot_failures: int = 5
    login_codeless_failures: int = 10
    login_ip_failures: int = 20
    login_tracked_keys: int = 10_000  # bounds memory however many names or addresses an attacker tries
    # /history token bucket per slot.
    history_rate: float = 20.0
    history_burst: float = 40.0
    config_poll_interval: float = 0.25
    # Web Push: admit http:// endpoints on 127.0.0.1/localhost and skip the public-address checks. For tests that
    # run a fake push service on loopback; never set in production (endpoints are client-supplied URLs).
    push_allow_insecure_endpoints: bool = False
    shutdown_grace: float = 2.0
