"""The aiohttp application: middlewares and routes around one BrokerState."""

from __future__ import annotations

from aiohttp import web

from ac7_broker.errors import error_middleware
from ac7_broker.middleware import identity_middleware
from ac7_broker.routes import activity, live, messages, pages, push_subscriptions, session, slots, team
from ac7_broker.settings import Settings
from ac7_broker.state import STATE_KEY, BrokerState


def create_app(state: BrokerState) -> web.Application:
    settings: Settings = state.settings
    # client_max_size is aiohttp's own cap; our readers enforce the per-route limits below it.
    app = web.Application(
        middlewares=[error_middleware, identity_middleware], client_max_size=settings.max_activity_body
    )
    app[STATE_KEY] = state
    for module in (team, session, messages, live, activity, slots, push_subscriptions, pages):
        app.add_routes(module.routes)
    return app
