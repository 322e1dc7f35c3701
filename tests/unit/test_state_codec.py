"""The state codec: every encoding gives back exactly what it was given."""

from __future__ import annotations

import doctest
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.features import codec
from models.features import dynamodb_store as ddb
from models.features.online import MemoryStore, OnlineFeatures, RawEvent


def bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70)))
def test_codec_deltas_roundtrip(values: list[int]) -> None:
    out = bytearray()
    codec.write_deltas(out, values)
    reader = codec.Reader(bytes(out))
    assert codec.read_deltas(reader, len(values)) == values
    assert reader.at_end()


@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40)).map(sorted))
def test_codec_sorted_roundtrip(values: list[int]) -> None:
    out = bytearray()
    codec.write_sorted(out, values)
    assert codec.read_sorted(codec.Reader(bytes(out)), len(values)) == values


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(10**6), 10**6).map(lambda c: c / 100),
            st.sampled_from([0.0, 1.0, -0.0, 1e-300, 2.0**53, 2.0**53 + 2]),
        )
    )
)
def test_codec_column_roundtrip_is_bit_exact(values: list[float]) -> None:
    # given any floats, cents, integers, zeros, NaN and infinities
    out = bytearray()
    codec.write_column(out, values)
    got = codec.read_column(codec.Reader(bytes(out)), len(values))
    # then the same floats come back (0.0 and -0.0 compare equal: both are "no amount")
    assert len(got) == len(values)
    for a, b in zip(got, values, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == b


def test_codec_column_picks_the_shortest_exact_encoding() -> None:
    cases = {
        codec.ZERO: [0.0] * 50,
        codec.SPARSE: [0.0] * 49 + [1.0],
        codec.UINTS: [1.0, 0.0, 1.0, 1.0],
        codec.INTS: [1.0, -1.0, 1.0, 1.0],
        codec.UCENTS: [12.34, 0.01, 250.0],
        codec.CENTS: [12.34, -0.01, 250.0],
        codec.FLOAT64: [0.1 + 0.2, 1.0],
    }
    for tag, values in cases.items():
        out = bytearray()
        codec.write_column(out, values)
        assert out[0] == tag, (tag, values)
    out = bytearray()
    codec.write_column(out, [153.21] * 10)
    assert len(out) == 1 + 1 + (14 * 10 + 7) // 8  # 15321 cents: 14 bits, bit-packed


@given(st.lists(st.integers(min_value=0, max_value=2**64)))
def test_codec_packed_roundtrip(values: list[int]) -> None:
    out = bytearray()
    codec.put_packed(out, values)
    reader = codec.Reader(bytes(out))
    assert reader.packed(len(values)) == values
    assert reader.at_end()


def test_codec_docstring_example() -> None:
    assert doctest.testmod(codec).failed == 0


@given(st.lists(st.booleans()))
def test_codec_positions_roundtrip(flags: list[bool]) -> None:
    out = bytearray()
    codec.write_positions(out, flags)
    assert codec.read_positions(codec.Reader(bytes(out)), len(flags)) == [
        i for i, f in enumerate(flags) if f
    ]


def test_codec_truncated_input_is_a_typed_error() -> None:
    out = bytearray()
    codec.write_column(out, [12.34, 99.99])
    with pytest.raises(codec.CorruptStateError, match="truncated"):
        codec.read_column(codec.Reader(bytes(out[:-1])), 2)
    with pytest.raises(codec.CorruptStateError, match="unknown column encoding"):
        codec.read_column(codec.Reader(b"\x09"), 1)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 40 * 86_400),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(1, 100_000).map(lambda c: c / 100),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_state_main_item_roundtrip(rows: list[tuple[int, int, int, float, bool]]) -> None:
    # given states built by the engine from arbitrary events, labels and pending labels
    engine = OnlineFeatures(MemoryStore())
    events = []
    for i, (t, customer, terminal, amount, is_label) in enumerate(rows):
        values = {"TX_FRAUD": 1.0} if is_label else {"TX_AMOUNT": amount}
        tx_id = i // 2 if is_label else i
        events.append(RawEvent(is_label, tx_id, t, customer, terminal, values))
    engine.process_raw(events)
    for (entity, _), state in engine.store.states.items():  # type: ignore[attr-defined]
        machine = engine.machines[entity]
        # when encoded and decoded
        again = ddb.decode_main(ddb.encode_main(state, machine), machine)
        # then nothing is lost
        assert again.keys == state.keys
        assert bits([v for c in again.values for v in c]) == bits(
            [v for c in state.values for v in c]
        )
        assert again.labelled == state.labelled
        assert again.pending == state.pending
        assert again.latest == state.latest
        assert again.counters == state.counters


def test_state_unknown_format_is_refused() -> None:
    machine = OnlineFeatures(MemoryStore()).machines["CUSTOMER_ID"]
    with pytest.raises(codec.CorruptStateError, match="unknown state format"):
        ddb.decode_main(b"\x07", machine)


def test_item_size_follows_dynamodb_rules() -> None:
    item = {"pk": {"S": "CUSTOMER_ID#1"}, "v": {"N": "12345"}, "d": {"B": b"x" * 1000}}
    # names 2 + 1 + 1, values 13 + (5 digits -> 3 + 1) + 1000
    assert ddb.item_size(item) == 4 + 13 + 4 + 1000
    assert ddb.write_units(1024) == 1 and ddb.write_units(1025) == 2
    assert ddb.write_units(10, transactional=True) == 2
    assert ddb.read_units(4096, consistent=True) == 1.0
    assert ddb.read_units(4097, consistent=False) == 1.0
    assert ddb.read_units(100, consistent=False) == 0.5


@pytest.mark.parametrize(
    ("pk", "version", "data", "expires"),
    [("CUSTOMER_ID#1", "1", b"", "1700000000"), ("TERMINAL_ID#99999", "120034", b"x" * 900, "9")],
)
def test_main_item_size_shortcut_equals_the_general_rule(
    pk: str, version: str, data: bytes, expires: str
) -> None:
    main = {
        "pk": {"S": pk},
        "sk": {"S": "S"},
        "v": {"N": version},
        "d": {"B": data},
        "expires_at": {"N": expires},
    }
    assert ddb._main_size(main) == ddb.item_size(main)
