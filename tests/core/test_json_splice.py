"""Surgical JSON rewriting: untouched text stays byte-identical, and the result always parses to the new doc."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from ac7_core import json_splice
from ac7_core.json_splice import DuplicateKeyError

H_ALICE = "sha256:" + "a" * 64
H_BOB = "sha256:" + "b" * 64
H_CAROL = "sha256:" + "c" * 64
H_NEW = "sha256:" + "d" * 64

# Deliberately odd hand formatting: mixed indentation, tabs, spaces around colons, one-line and multi-line objects.
ALICE = '{"name": "alice", "role":"lead",   "authority":"director", "tokenHash": "' + H_ALICE + '"}'
BOB = '{ "name" : "bob",\n      "role": "engineer",\n          "tokenHash":"' + H_BOB + '"   }'
CAROL = '{"name":"carol","role":"engineer","tokenHash":"' + H_CAROL + '", "x": [1, 2,   3], "ü": "✓"}'
TEXT = (
    '{ "team" :{"name":"acme",   "directive" : "ship it"},\n'
    '  "_comment": "hand written; keep me",\n'
    '  "roles": {"lead": {}, "engineer": {"description": "Builds"}},\n'
    '  "slots": [\n'
    f"      {ALICE},\n"
    f"    {BOB},\n"
    f"\t{CAROL}\n"
    "  ],\n"
    '  "unknown": {"nested": [true, null, 1.5e3]}\n'
    "}\n"
)


def _dumps(value: Any) -> str:
    return json.dumps(value)  # key order and int/float/bool distinctions included


def test_unchanged_document_gives_identical_text() -> None:
    doc = json.loads(TEXT)
    assert json_splice.rewrite(TEXT, doc) == TEXT
    assert json_splice.rewrite(TEXT, copy.deepcopy(doc)) == TEXT


def test_changed_value_touches_only_that_value() -> None:
    doc = json.loads(TEXT)
    doc["slots"][1]["tokenHash"] = H_NEW
    out = json_splice.rewrite(TEXT, doc)
    assert out == TEXT.replace(H_BOB, H_NEW)
    assert ALICE in out and CAROL in out
    assert json.loads(out) == doc


def test_changed_nested_values_touch_only_those_values() -> None:
    doc = json.loads(TEXT)
    doc["roles"]["engineer"]["description"] = "Builds things"
    doc["team"]["directive"] = "ship it now"
    out = json_splice.rewrite(TEXT, doc)
    assert out == TEXT.replace('"Builds"', '"Builds things"').replace('"ship it"', '"ship it now"')


def test_changed_list_item_keeps_everything_outside_the_list() -> None:
    doc = json.loads(TEXT)
    doc["slots"][2]["x"][1] = 20
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    start, end = CAROL.index("[1, 2,   3]"), CAROL.index("[1, 2,   3]") + len("[1, 2,   3]")
    assert out.startswith(TEXT[: TEXT.index(CAROL) + start])
    assert out.endswith(TEXT[TEXT.index(CAROL) + end :])


def test_key_renamed_in_place_keeps_other_slots() -> None:
    # What migration does: token -> tokenHash at the same position.
    doc = json.loads(TEXT)
    slot = doc["slots"][1]
    doc["slots"][1] = {("token" if k == "tokenHash" else k): v for k, v in slot.items()}
    out = json_splice.rewrite(TEXT, doc)
    assert ALICE in out and CAROL in out
    assert BOB not in out
    assert _dumps(json.loads(out)) == _dumps(doc)
    head = TEXT[: TEXT.index(ALICE) + len(ALICE)]
    assert out.startswith(head)
    assert out.endswith(TEXT[TEXT.index(CAROL) :])


def test_added_key_in_one_slot_keeps_the_others() -> None:
    doc = json.loads(TEXT)
    doc["slots"][1]["totpSecret"] = "enc-v1:abc:def:ghi"
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    assert out.startswith(TEXT[: TEXT.index(BOB)])
    assert out.endswith(TEXT[TEXT.index(BOB) + len(BOB) :])


def test_adding_a_slot_keeps_existing_slot_text() -> None:
    doc = json.loads(TEXT)
    doc["slots"].append({"name": "dave", "role": "engineer", "tokenHash": H_NEW})
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    for text in (ALICE, BOB, CAROL):
        assert text in out
    assert out.startswith(TEXT[: TEXT.index('"slots"')])
    assert out.endswith(TEXT[TEXT.index('  "unknown"') :])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_removing_a_slot_keeps_the_other_slots_text(index: int) -> None:
    doc = json.loads(TEXT)
    del doc["slots"][index]
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    texts = [ALICE, BOB, CAROL]
    removed = texts.pop(index)
    assert removed not in out
    for text in texts:
        assert text in out
    assert out.startswith(TEXT[: TEXT.index('"slots"')])
    assert out.endswith(TEXT[TEXT.index('  "unknown"') :])


def test_reordered_slots_keep_their_text() -> None:
    doc = json.loads(TEXT)
    doc["slots"].reverse()
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    assert out.index(CAROL) < out.index(BOB) < out.index(ALICE)


def test_replacing_a_slot_by_name_keeps_unchanged_members() -> None:
    # An edited slot that is no longer equal is still matched by name when the list is rebuilt.
    doc = json.loads(TEXT)
    doc["slots"][0]["tokenHash"] = H_NEW
    del doc["slots"][1]
    out = json_splice.rewrite(TEXT, doc)
    assert _dumps(json.loads(out)) == _dumps(doc)
    assert ALICE.replace(H_ALICE, H_NEW) in out
    assert CAROL in out


def test_whitespace_around_the_root_survives() -> None:
    text = '\n\n  {"a": 1}  \n\n'
    assert json_splice.rewrite(text, {"a": 2}) == '\n\n  {"a": 2}  \n\n'


def test_new_values_are_rendered_readably() -> None:
    text = '{\n  "a": 1\n}\n'
    out = json_splice.rewrite(text, {"a": 1, "b": {"c": [1, 2]}})
    assert json.loads(out) == {"a": 1, "b": {"c": [1, 2]}}
    assert out.startswith('{\n  "a": 1,\n  "b": {\n')  # unchanged member kept, new one indented alongside


def test_type_changes_are_not_mistaken_for_no_change() -> None:
    text = '{"a": 1, "b": [true], "c": 1.0}'
    for new in ({"a": 1.0, "b": [True], "c": 1.0}, {"a": 1, "b": [1], "c": 1.0}, {"a": 1, "b": [True], "c": 1}):
        assert _dumps(json.loads(json_splice.rewrite(text, new))) == _dumps(new)


def test_key_order_change_is_written() -> None:
    text = '{"a": 1, "b": 2}'
    out = json_splice.rewrite(text, {"b": 2, "a": 1})
    assert list(json.loads(out)) == ["b", "a"]


def test_render_new_is_canonical() -> None:
    assert json_splice.render_new({"a": ["ü"]}) == '{\n  "a": [\n    "ü"\n  ]\n}\n'


@pytest.mark.parametrize(
    ("text", "key", "line", "column"),
    [
        ('{"a": 1, "a": 2}', "a", 1, 10),
        ('{\n  "team": {},\n  "slots": [],\n  "team": {}\n}', "team", 4, 3),
        ('{"slots": [{"name": "x"},\n {"name": "y",\n\t"name": "z"}]}', "name", 3, 2),
        ('{"a": {"b": {"c": 1, "c": 2}}}', "c", 1, 22),
        ('[{}, {"k": 1, "k": 1}]', "k", 1, 15),
    ],
)
def test_duplicate_keys_detected_with_line_and_column(text: str, key: str, line: int, column: int) -> None:
    json.loads(text)  # the standard parser silently keeps the last one
    with pytest.raises(DuplicateKeyError) as exc:
        json_splice.check_duplicate_keys(text)
    assert exc.value.key == key
    assert str(exc.value) == f"duplicate key {json.dumps(key)} at line {line} column {column}"
    with pytest.raises(DuplicateKeyError):
        json_splice.rewrite(text, json.loads(text))


def test_same_key_in_different_objects_is_fine() -> None:
    json_splice.check_duplicate_keys('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}], "c": "a"}')


# ---- property-style test -------------------------------------------------------------------------------------

_WS = ["", "", " ", "  ", "\n", "\n    ", "\t", " \n\t  ", "\r\n  "]
_STRINGS = ["", "alice", "bob", "ü✓", 'q"uote', "back\\slash", "tab\there", "line\nbreak", "\x01", "enc-v1:a:b:c"]


def _ws(rng: random.Random) -> str:
    return rng.choice(_WS)


def _scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.choice(_STRINGS) + str(rng.randint(0, 9)),
            lambda: rng.randint(-(10**12), 10**12),
            lambda: rng.choice([0, 1, -1]),
            lambda: round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)),
            lambda: rng.choice([True, False, None]),
        ]
    )()


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return _scalar(rng)
    if roll < 0.7:
        return {_key(rng): _value(rng, depth - 1) for _ in range(rng.randint(0, 4))}
    if roll < 0.85:
        # A list of named entries, like slots.
        return [
            {"name": f"n{i}", **{_key(rng): _value(rng, depth - 2) for _ in range(rng.randint(0, 3))}}
            for i in rng.sample(range(10), rng.randint(0, 4))
        ]
    return [_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]


def _key(rng: random.Random) -> str:
    return rng.choice(["a", "b", "c", "name", "tokenHash", "_comment", "ü", 'k"', "x y"]) + str(rng.randint(0, 3))


def _format(rng: random.Random, value: Any) -> str:
    """Serialize with random whitespace between every token."""
    if isinstance(value, dict):
        if not value:
            return "{" + _ws(rng) + "}"
        members = [
            _ws(rng) + json.dumps(k, ensure_ascii=rng.random() < 0.5) + _ws(rng) + ":" + _ws(rng) + _format(rng, v)
            for k, v in value.items()
        ]
        return "{" + ("," + _ws(rng)).join(members) + _ws(rng) + "}"
    if isinstance(value, list):
        if not value:
            return "[" + _ws(rng) + "]"
        return "[" + ",".join(_ws(rng) + _format(rng, v) + _ws(rng) for v in value) + "]"
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


def _containers(value: Any, out: list[Any]) -> list[Any]:
    if isinstance(value, dict | list):
        out.append(value)
        for child in value.values() if isinstance(value, dict) else value:
            _containers(child, out)
    return out


def _mutate(rng: random.Random, doc: Any) -> Any:
    """Apply one random edit somewhere in `doc` (in place where possible); return the (possibly new) root."""
    containers = _containers(doc, [])
    if not containers or rng.random() < 0.03:
        return _value(rng, 3)
    target = rng.choice(containers)
    op = rng.randint(0, 5)
    if isinstance(target, dict):
        keys = list(target)
        if op == 0 or not keys:
            target[_key(rng) + "new"] = _value(rng, 2)
        elif op == 1:
            del target[rng.choice(keys)]
        elif op == 2:
            items = list(target.items())
            rng.shuffle(items)
            target.clear()
            target.update(items)
        elif op == 3:
            target[rng.choice(keys)] = _value(rng, 2)
        else:
            target[rng.choice(keys)] = _scalar(rng)
    else:
        if op == 0 or not target:
            target.insert(rng.randint(0, len(target)), _value(rng, 2))
        elif op == 1:
            del target[rng.randrange(len(target))]
        elif op == 2:
            rng.shuffle(target)
        elif op == 3:
            target[rng.randrange(len(target))] = _value(rng, 2)
        elif op == 4:
            target.append(copy.deepcopy(rng.choice(target)))  # duplicates of existing items
        else:
            target[rng.randrange(len(target))] = _scalar(rng)
    return doc


@pytest.mark.parametrize("seed", range(8))
def test_random_edits_always_parse_to_the_new_document(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        old = _value(rng, 5) if rng.random() < 0.2 else {_key(rng): _value(rng, 4) for _ in range(rng.randint(1, 5))}
        text = _ws(rng) + _format(rng, old) + _ws(rng)
        assert json.loads(text) == old
        assert json_splice.rewrite(text, copy.deepcopy(old)) == text
        new = copy.deepcopy(old)
        for _ in range(rng.randint(1, 4)):
            new = _mutate(rng, new)
        out = json_splice.rewrite(text, new)
        assert _dumps(json.loads(out)) == _dumps(new), (text, new, out)
        # Rewriting the result to itself is a no-op (the output is stable).
        assert json_splice.rewrite(out, json.loads(out)) == out


@pytest.mark.parametrize("seed", range(8))
def test_random_single_slot_edits_keep_other_slots_byte_identical(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(100):
        slots = [
            {"name": f"s{i}", "role": "r", **{_key(rng): _value(rng, 2) for _ in range(rng.randint(0, 3))}}
            for i in range(rng.randint(2, 6))
        ]
        slot_texts = [_format(rng, s) for s in slots]
        text = (
            '{ "team": {"name": "t"},' + _ws(rng) + '"slots": [' + _ws(rng)
            + ("," + _ws(rng)).join(slot_texts) + _ws(rng) + "]," + _ws(rng) + '"tail": 1}\n'
        )  # fmt: skip
        doc = json.loads(text)
        victim = rng.randrange(len(slots))
        action = rng.choice(["edit", "add-key", "remove", "append", "insert"])
        if action == "edit":
            doc["slots"][victim]["role"] = "changed"
        elif action == "add-key":
            doc["slots"][victim]["tokenHash"] = H_NEW
        elif action == "remove":
            del doc["slots"][victim]
        elif action == "append":
            doc["slots"].append({"name": "new", "role": "r"})
        else:
            doc["slots"].insert(victim, {"name": "new", "role": "r"})
        out = json_splice.rewrite(text, doc)
        assert _dumps(json.loads(out)) == _dumps(doc)
        for i, slot_text in enumerate(slot_texts):
            if action in ("edit", "add-key", "remove") and i == victim:
                continue
            assert slot_text in out, (action, slot_text, out)
        assert out.startswith('{ "team": {"name": "t"},')
        assert out.endswith('"tail": 1}\n')
