"""SSE parsing and Anthropic stream reassembly, including fidelity against the official SDK's accumulator."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import anthropic
import pytest
from anthropic_fixtures import (
    MESSAGE_STOP,
    OVERLOADED,
    STREAMS,
    TOOL_INPUT,
    block_start,
    block_stop,
    chunked,
    delta,
    fake_api,
    json_delta,
    message_delta,
    message_start,
    multibyte_events,
    server_tool_events,
    sse,
    text_delta,
    text_events,
    thinking_events,
    tool_events,
    usage_events,
)

from ac7_core.anthropic_sse import SseEvent, SseParser, StreamAccumulator, reassemble


def parse_all(data: bytes, splits: list[int] | None = None) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    cuts = [0, *(splits or []), len(data)]
    for start, end in itertools.pairwise(cuts):
        events.extend(parser.feed(data[start:end]))
    events.extend(parser.close())
    return events


def accumulate(data: bytes, size: int | None = None) -> StreamAccumulator:
    pieces = chunked(data, size) if size else [data]
    return reassemble((float(i), piece) for i, piece in enumerate(pieces))


# --- the SSE parser -----------------------------------------------------------------------------------------------


MIXED = (
    b"\xef\xbb\xbf: a comment first\n"
    b"event: one\r\n"
    b"data: first line\r"
    b"data:second line, no space\n"
    b"data:  two spaces keep one\n"
    b"id: 7\n"
    b"retry: 1500\n"
    b"unknown-field: ignored\n"
    b"\r\n"
    b"data\n"  # a field without a colon: data with an empty value
    b"\n"
    b"event: no-data-is-no-event\n"
    b"\n"
    b"id: bad\x00id\n"
    b"retry: 12x\n"
    b'data: {"k": "v"}\r\n'
    b"\r"
    b": trailing comment\n"
    b"data: never dispatched"
)

MIXED_EXPECTED = [
    SseEvent("one", "first line\nsecond line, no space\n two spaces keep one", "7", 1500),
    SseEvent("message", "", "7", None),
    SseEvent("message", '{"k": "v"}', "7", None),
]


def test_parser_handles_every_line_ending_comments_fields_and_drops_an_unterminated_event() -> None:
    parser = SseParser()
    events = parser.feed(MIXED) + parser.close()
    assert events == MIXED_EXPECTED
    assert parser.dropped_partial


@pytest.mark.parametrize("data", [MIXED, sse(*text_events(), crlf=True), sse(*multibyte_events())])
def test_parser_gives_the_same_events_for_a_split_at_every_byte(data: bytes) -> None:
    whole = parse_all(data)
    assert whole
    for cut in range(len(data) + 1):
        assert parse_all(data, [cut]) == whole, cut
    assert parse_all(data, list(range(1, len(data)))) == whole  # one byte at a time


def test_a_leading_bom_is_dropped_even_when_split() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n"
    assert parse_all(data) == parse_all(data, [1]) == parse_all(data, [2]) == [SseEvent("message", "x")]
    assert parse_all(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [SseEvent("message", "a")]  # only at the start


def test_crlf_split_between_cr_and_lf_is_one_line_break_not_two() -> None:
    # If "\r" + "\n" across chunks counted as two line endings, the blank line would dispatch "a" early, alone.
    data = b"data: a\r\ndata: b\r\n\r\n"
    cut = data.index(b"\n")  # right between the first \r and \n
    assert parse_all(data, [cut]) == [SseEvent("message", "a\nb")]
    assert parse_all(b"data: a\r\r", [8]) == [SseEvent("message", "a")]  # lone CRs are line endings too


def test_utf8_character_split_across_chunks_is_decoded_whole() -> None:
    data = "data: 🎉é中\n\n".encode()
    for cut in range(6, 6 + 9):  # every position inside the three multibyte characters
        assert parse_all(data, [cut]) == [SseEvent("message", "🎉é中")]
    assert parse_all(b"data: \xff ok\n\n") == [SseEvent("message", "\ufffd ok")]  # invalid bytes: U+FFFD


# --- reassembly ---------------------------------------------------------------------------------------------------


def test_text_stream_reassembles_to_the_non_streamed_message() -> None:
    acc = accumulate(sse(*text_events()), 50)
    assert acc.complete and acc.started and acc.error is None
    assert acc.message == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-5-5",
        "content": [{"type": "text", "text": "Hello, world!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 15},
    }


def test_first_delta_time_is_the_chunk_that_completes_the_first_content_block_delta() -> None:
    data = sse(*text_events())
    first = data.index(b"event: content_block_delta")
    end_of_first = data.index(b"\n\n", first) + 2
    acc = StreamAccumulator()
    acc.feed(data[:first], 10.0)  # message_start, block start, ping
    acc.feed(data[first : end_of_first - 1], 20.0)  # the delta, short of its blank line
    before = acc.first_delta_ms
    acc.feed(data[end_of_first - 1 : end_of_first], 30.0)
    acc.feed(data[end_of_first:], 40.0)  # the later deltas
    assert (before, acc.first_delta_ms) == (None, 30.0)
    assert accumulate(sse(*text_events()[:3])).first_delta_ms is None  # no delta at all


def test_tool_input_split_at_every_point_of_the_json_is_parsed_back() -> None:
    raw = json.dumps(TOOL_INPUT, ensure_ascii=False)
    for cut in range(len(raw) + 1):
        acc = accumulate(sse(*tool_events(pieces=[raw[:cut], raw[cut:]])))
        block = acc.message["content"][1]
        assert block == {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "Bash",
            "input": TOOL_INPUT,
        }, cut
        assert acc.unparsed_inputs == 0


def test_tool_input_stream_chunked_at_every_byte_boundary_is_parsed_back() -> None:
    raw = json.dumps(TOOL_INPUT, ensure_ascii=False)
    data = sse(*tool_events(pieces=[raw[:5], raw[5:77], raw[77:]]))
    for cut in range(len(data) + 1):
        acc = StreamAccumulator()
        acc.feed(data[:cut], 1.0)
        acc.feed(data[cut:], 2.0)
        acc.close()
        message = acc.message
        assert acc.complete, cut
        assert message["content"][1]["input"] == TOOL_INPUT, cut
        assert message["content"][0]["text"] == "Let me search.", cut
        assert message["stop_reason"] == "tool_use"


def test_tool_use_without_input_deltas_keeps_its_start_input() -> None:
    events = [
        message_start(),
        block_start(0, {"type": "tool_use", "id": "t", "name": "Noop", "input": {}}),
        json_delta(0, ""),
        block_stop(0),
        MESSAGE_STOP,
    ]
    assert accumulate(sse(*events)).message["content"] == [{"type": "tool_use", "id": "t", "name": "Noop", "input": {}}]


def test_thinking_is_kept_and_signatures_dropped() -> None:
    acc = accumulate(sse(*thinking_events()), 33)
    content = acc.message["content"]
    assert content[0]["type"] == "thinking"
    assert content[0]["thinking"] == "The user wants a greeting. Keep it short."
    assert content[0]["signature"] == ""  # the signature_delta was not applied
    assert "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxSIG" not in json.dumps(acc.message)
    assert content[1] == {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
    assert content[2] == {"type": "text", "text": "Hi!"}


def test_server_tools_citations_and_unknown_blocks_are_kept_as_sent() -> None:
    content = accumulate(sse(*server_tool_events()), 64).message["content"]
    assert content[0] == {
        "type": "server_tool_use",
        "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "name": "web_search",
        "input": {"query": "ac7 release notes"},
    }
    assert content[1]["type"] == "web_search_tool_result"
    assert content[1]["content"][0]["url"] == "https://example.test/ac7"
    assert content[2]["text"] == "ac7 shipped version 1.0."
    assert [c["cited_text"] for c in content[2]["citations"]] == ["ac7 1.0 is out"]
    assert content[3] == {"type": "brand_new_block", "payload": {"x": 1}}


def test_usage_merges_message_delta_over_message_start() -> None:
    message = accumulate(sse(*usage_events())).message
    assert message["usage"] == {
        "input_tokens": 14,  # updated by message_delta
        "cache_creation_input_tokens": 5000,  # updated
        "cache_read_input_tokens": 30000,  # null in message_delta: message_start's survives
        "output_tokens": 256,
        "service_tier": "standard",  # absent from message_delta: kept
    }
    assert message["stop_reason"] == "max_tokens"


def test_error_event_mid_stream_is_recorded_and_partial_content_kept() -> None:
    events = [message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Partial ans"), OVERLOADED]
    acc = accumulate(sse(*events))
    assert acc.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert not acc.complete
    assert acc.message["content"] == [{"type": "text", "text": "Partial ans"}]
    only_error = accumulate(sse(OVERLOADED))
    assert only_error.error == OVERLOADED["error"] and not only_error.started
    assert only_error.message["content"] == [] and only_error.message["id"] is None


def test_cut_stream_keeps_what_arrived_and_the_unparsed_tool_input_as_a_string() -> None:
    data = sse(*tool_events())
    cut = data.index(b"event: content_block_stop", data.index(b"input_json_delta")) - 40
    acc = accumulate(data[:cut], 16)
    assert not acc.complete and acc.dropped_partial
    message = acc.message
    assert message["content"][0] == {"type": "text", "text": "Let me search."}
    tool = message["content"][1]
    assert isinstance(tool["input"], str) and tool["input"]
    assert json.dumps(TOOL_INPUT, ensure_ascii=False).startswith(tool["input"])
    assert (tool["id"], tool["name"]) == ("toolu_01A09q90qw90lq917835lq9", "Bash")
    assert acc.unparsed_inputs == 1
    assert message["stop_reason"] is None
    assert message["usage"] == {"input_tokens": 2048, "output_tokens": 3, "cache_read_input_tokens": 1800}


def test_noise_is_ignored_and_events_before_message_start_are_tolerated() -> None:
    data = (
        b"data: not json\n\n"
        b"data: [1, 2]\n\n"
        + sse(block_start(0, {"type": "text", "text": "pre"}), text_delta(0, "-start"))
        + sse(message_start(), delta(0, {"type": "mystery_delta", "x": 1}), text_delta(5, "no such block"))
        + sse({"type": "some_future_event"}, message_delta("end_turn", {"output_tokens": 2}))
        + sse(message_start({"input_tokens": 999}, msg_id="msg_second"), MESSAGE_STOP)  # a 2nd start is ignored
    )
    acc = accumulate(data, 5)
    assert acc.complete and acc.started
    assert acc.message["content"] == [{"type": "text", "text": "pre-start"}]
    assert acc.message["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert acc.message["usage"] == {"input_tokens": 25, "output_tokens": 2}
    assert acc.ignored_events == 5  # two non-object payloads, the delta for index 5, the unknown event, 2nd start


def test_event_type_falls_back_to_the_sse_event_name() -> None:
    data = b"event: message_stop\ndata: {}\n\n"
    assert accumulate(data).complete


# --- fidelity against the official SDK ----------------------------------------------------------------------------


def _strip_signatures(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(content)
    for block in out:
        block.pop("signature", None)
    return out


async def _sdk_final(base_url: str) -> dict[str, Any]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)
    try:
        async with client.messages.stream(
            model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            final = await stream.get_final_message()
        return final.to_dict()
    finally:
        await client.close()


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # the SDK on brand_new_block
@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_reassembly_matches_the_official_sdk(name: str) -> None:
    data = sse(*STREAMS[name])
    async with fake_api() as api:
        api.body, api.chunk = data, 13
        sdk = await _sdk_final(api.base_url)
    ours = accumulate(data, 7).message
    assert _strip_signatures(ours["content"]) == _strip_signatures(sdk["content"])
    assert ours["usage"] == sdk["usage"]
    assert (ours["id"], ours["model"], ours["stop_reason"], ours["stop_sequence"]) == (
        sdk["id"],
        sdk["model"],
        sdk["stop_reason"],
        sdk["stop_sequence"],
    )


async def test_cut_stream_text_and_usage_match_the_sdk() -> None:
    data = sse(*text_events())
    data = data[: data.index(b"event: content_block_stop")]
    async with fake_api() as api:
        api.body = data
        sdk = await _sdk_final(api.base_url)
    ours = accumulate(data, 11)
    assert not ours.complete
    assert ours.message["content"] == sdk["content"] == [{"type": "text", "text": "Hello, world!"}]
    assert ours.message["usage"] == sdk["usage"]


async def test_error_event_matches_what_the_sdk_raises() -> None:
    data = sse(message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "x"), OVERLOADED)
    async with fake_api() as api:
        api.body = data
        with pytest.raises(anthropic.APIStatusError) as raised:
            await _sdk_final(api.base_url)
    assert isinstance(raised.value.body, dict)
    assert accumulate(data).error == raised.value.body["error"]


def test_message_delta_without_usage_changes_nothing_else() -> None:
    events = [
        message_start({"input_tokens": 3, "output_tokens": 1}),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
        MESSAGE_STOP,
    ]
    message = accumulate(sse(*events)).message
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 1}
    assert message["stop_reason"] == "end_turn"


def test_stop_sequence_is_taken_from_message_delta() -> None:
    events = [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "a"),
        block_stop(0),
        message_delta("stop_sequence", {"output_tokens": 2}, stop_sequence="\n\nHuman:"),
        MESSAGE_STOP,
    ]
    message = accumulate(sse(*events)).message
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "\n\nHuman:")
