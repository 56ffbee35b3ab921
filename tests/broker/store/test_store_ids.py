"""UUIDv7 message ids: format, monotonicity, sortability."""

from __future__ import annotations

import threading
import uuid

import pytest

from ac7_broker.store.ids import UuidV7Generator, is_uuid, new_message_id, uuid7_timestamp_ms

NOW = 1_700_000_000_000


def test_ids_are_rfc9562_v7_with_the_given_timestamp() -> None:
    value = UuidV7Generator().new(NOW)
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert uuid7_timestamp_ms(value) == NOW
    assert is_uuid(value)


def test_many_ids_in_one_millisecond_are_strictly_increasing() -> None:
    gen = UuidV7Generator()
    ids = [gen.new(NOW) for _ in range(20_000)]  # far past the 12-bit counter: exercises rollover
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Rollover borrows the next millisecond rather than wrapping; it never runs far ahead.
    assert NOW <= uuid7_timestamp_ms(ids[-1]) <= NOW + 20


def test_ids_stay_monotonic_when_the_clock_steps_back() -> None:
    gen = UuidV7Generator()
    first = gen.new(NOW + 5_000)
    later = [gen.new(NOW) for _ in range(10)]
    assert [first, *later] == sorted([first, *later])
    assert len({first, *later}) == 11


def test_ids_sort_by_time_across_milliseconds() -> None:
    gen = UuidV7Generator()
    ids = [gen.new(NOW + ms) for ms in range(0, 5000, 7)]
    assert ids == sorted(ids)
    assert [uuid7_timestamp_ms(i) for i in ids] == list(range(NOW, NOW + 5000, 7))


def test_ids_keep_random_bits() -> None:
    # Same millisecond in two fresh generators: the random seed of the counter and rand_b must differ.
    assert UuidV7Generator().new(NOW) != UuidV7Generator().new(NOW)


def test_process_wide_generator_is_monotonic_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def mint(out: list[str]) -> None:
        for _ in range(2000):
            out.append(new_message_id(NOW))

    threads = [threading.Thread(target=mint, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in results for i in out]
    assert len(set(every)) == len(every)
    for out in results:
        assert out == sorted(out)


@pytest.mark.parametrize("bad", [-1, 1 << 48])
def test_out_of_range_timestamps_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError):
        UuidV7Generator().new(bad)
