"""SQLite persistence for the broker: one worker thread per database file, async methods on the event loop."""

from .activity import ActivityRow, ActivityStore
from .clock import Clock, wall_clock_ms
from .cursor import Cursor
from .ids import new_message_id
from .messages import Message, MessageStore
from .push_subscriptions import PushSubscription, PushSubscriptionStore
from .schema import SchemaTooNewError
from .sessions import SessionStore
from .store import ACTIVITY_DB_NAME, MAIN_DB_NAME, Store
from .totp_state import TotpState
from .worker import StoreClosedError

__all__ = [
    "ACTIVITY_DB_NAME",
    "MAIN_DB_NAME",
    "ActivityRow",
    "ActivityStore",
    "Clock",
    "Cursor",
    "Message",
    "MessageStore",
    "PushSubscription",
    "PushSubscriptionStore",
    "SchemaTooNewError",
    "SessionStore",
    "Store",
    "StoreClosedError",
    "TotpState",
    "new_message_id",
    "wall_clock_ms",
]
