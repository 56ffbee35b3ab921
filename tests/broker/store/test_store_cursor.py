"""History cursors: encoding and strict parsing."""

from __future__ import annotations

import pytest

from ac7_broker.store import Cursor

ID = "01890a5d-ac96-774b-bcce-b302099a8057"


def test_encode_decode_round_trip() -> None:
    cursor = Cursor(1_700_000_000_123, ID)
    assert cursor.encode() == f"1700000000123:{ID}"
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.parse(cursor.encode()) == cursor


def test_parse_accepts_a_bare_timestamp() -> None:
    cursor = Cursor.parse("1700000000123")
    assert cursor == Cursor(1_700_000_000_123)
    assert cursor.id is None
    assert cursor.bound() == (1_700_000_000_123, "")
    assert Cursor.parse(cursor.encode()) == cursor
    assert Cursor.parse("0") == Cursor(0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "123",  # decode wants both parts
        f":{ID}",
        f"-1:{ID}",
        f"+1:{ID}",
        f" 1:{ID}",
        f"1 :{ID}",
        f"1_000:{ID}",
        f"1.5:{ID}",
        f"\u0661:{ID}",  # Arabic-Indic digit one: int() would accept it
        f"{1 << 63}:{ID}",
        f"99999999999999999999:{ID}",
        "1:not-a-uuid",
        f"1:{ID.upper()}",
        f"1:{ID}:extra",
        f"1:{ID}\n",
        f"1:{ID[:-1]}",
        "1:",
    ],
)
def test_decode_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Cursor.decode(text)


@pytest.mark.parametrize("text", ["", "-5", "1.5", "abc", " 7", "7 ", "1e3", "0x10", f"{1 << 63}", "1:nope", "1:2:3"])
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Cursor.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        Cursor(-1, ID)
    with pytest.raises(ValueError):
        Cursor(1, "nope")
    with pytest.raises(ValueError):
        Cursor(True, ID)
