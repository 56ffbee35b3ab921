"""Fixtures live in broker_harness (a uniquely named module that tests can import from)."""

from broker_harness import _clean_env, broker, http, start, team

__all__ = ["_clean_env", "broker", "http", "start", "team"]
