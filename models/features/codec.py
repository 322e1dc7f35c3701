"""Compact, exact binary encoding of feature state: varints, deltas, cents.

Why: DynamoDB bills a write per started KB and a read per started 4 KB, so the size of an
entity's item is its cost. An event of the handbook's data costs 5-8 bytes here (a time
delta, an id delta and the amount in cents, each a varint) where packed 64-bit arrays
cost 24. Every encoding is exact: a column is stored as integers or cents only when
decoding gives back the very same floats, else as float64.

Integer runs are varints or bit-packed at the width of their largest value, whichever is
shorter (:func:`put_packed`). Column tags: 0 all zero; 1 integers (zigzagged); 2 cents
(zigzagged ``round(v * 100)``); 3 float64 little-endian; 4 sparse integers (count, then
index gap and zigzag value per non-zero); 5 and 6: integers and cents, all non-negative,
unzigzagged. The encoder picks the shortest exact one.

Example::

    >>> out = bytearray(); write_column(out, [12.5, 3.99, 0.0]); bytes(out)
    b'\\x06\\x00\\xe2\\t\\x8f\\x03\\x00'
    >>> read_column(Reader(bytes(out)), 3)
    [12.5, 3.99, 0.0]
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import accumulate, pairwise

from models.errors import RtmlError

_INT_LIMIT = 2**53


class CorruptStateError(RtmlError):
    """An item's bytes do not decode (truncated, or written by an unknown format)."""


def zigzag(n: int) -> int:
    """Signed -> unsigned so that small magnitudes stay small: 0, -1, 1, -2 -> 0, 1, 2, 3."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def unzigzag(z: int) -> int:
    """Inverse of :func:`zigzag`."""
    return (z >> 1) if not z & 1 else -((z + 1) >> 1)


def put_uvarint(out: bytearray, n: int) -> None:
    """Append an unsigned LEB128 varint (7 bits a byte)."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_uvarints(out: bytearray, values: Sequence[int]) -> None:
    """Append unsigned varints."""
    for value in values:
        n = value
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)


def put_packed(out: bytearray, values: Sequence[int]) -> None:
    """Unsigned ints as varints, or bit-packed at the width of the largest if shorter.

    Bit-packing wins on the columns of an entity's events (time gaps, id deltas, cents),
    whose values have similar magnitudes: about 6 bytes an event at a card instead of 8.
    """
    width = max(values, default=0).bit_length()
    varints = bytearray()
    put_uvarints(varints, values)
    if 1 + (width * len(values) + 7) // 8 >= len(varints):
        out.append(0)
        out += varints
        return
    out.append(width + 1)
    acc = bits = 0
    for v in values:
        acc |= v << bits
        bits += width
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)


class Reader:
    """A cursor over bytes that decodes what the ``put_*``/``write_*`` functions wrote."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uvarint(self) -> int:
        """One unsigned varint."""
        return self.uvarints(1)[0]

    def uvarints(self, count: int) -> list[int]:
        """``count`` unsigned varints (the hot loop of every read)."""
        data, pos = self.data, self.pos
        out: list[int] = []
        append = out.append
        try:
            for _ in range(count):
                b = data[pos]
                pos += 1
                if b < 0x80:
                    append(b)
                    continue
                n, shift = b & 0x7F, 7
                while True:
                    b = data[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                append(n)
        except IndexError:
            raise CorruptStateError("state item truncated inside a varint") from None
        self.pos = pos
        return out

    def packed(self, count: int) -> list[int]:
        """Inverse of :func:`put_packed` for ``count`` values."""
        mode = self.take(1)[0]
        if mode == 0:
            return self.uvarints(count)
        width = mode - 1
        need = (width * count + 7) // 8
        data = self.take(need)
        mask = (1 << width) - 1
        out: list[int] = []
        acc = bits = pos = 0
        for _ in range(count):
            while bits < width:
                acc |= data[pos] << bits
                pos += 1
                bits += 8
            out.append(acc & mask)
            acc >>= width
            bits -= width
        return out

    def take(self, n: int) -> bytes:
        """The next ``n`` raw bytes."""
        if self.pos + n > len(self.data):
            raise CorruptStateError("state item truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def at_end(self) -> bool:
        """True once every byte is consumed (decoders check it: no silent trailing data)."""
        return self.pos == len(self.data)


# --- sorted integer sequences (times, tile ids) and free integer sequences (ids) -------


def write_sorted(out: bytearray, values: Sequence[int]) -> None:
    """A non-decreasing sequence: the first value zigzagged, then unsigned gaps."""
    if not values:
        return
    put_uvarint(out, zigzag(values[0]))
    put_packed(out, [b - a for a, b in pairwise(values)])


def read_sorted(reader: Reader, count: int) -> list[int]:
    """Inverse of :func:`write_sorted`."""
    if not count:
        return []
    first = unzigzag(reader.uvarint())
    return list(accumulate(reader.packed(count - 1), initial=first))


def write_deltas(out: bytearray, values: Sequence[int]) -> None:
    """Any integer sequence as zigzagged differences (ids close in time are close)."""
    if not values:
        return
    put_uvarint(out, zigzag(values[0]))
    put_packed(out, [zigzag(b - a) for a, b in pairwise(values)])


def read_deltas(reader: Reader, count: int) -> list[int]:
    """Inverse of :func:`write_deltas`."""
    if not count:
        return []
    first = unzigzag(reader.uvarint())
    return list(accumulate((unzigzag(z) for z in reader.packed(count - 1)), initial=first))


# --- float columns ----------------------------------------------------------------------

ZERO, INTS, CENTS, FLOAT64, SPARSE, UINTS, UCENTS = 0, 1, 2, 3, 4, 5, 6


def _as_ints(values: Sequence[float], scale: int) -> list[int] | None:
    """The values times ``scale`` as integers, if decoding them gives the same floats."""
    out = []
    for v in values:
        if not -_INT_LIMIT < v < _INT_LIMIT:  # also refuses NaN and infinities
            return None
        n = round(v * scale)
        if (n / scale if scale != 1 else float(n)) != v:
            return None
        out.append(n)
    return out


def write_column(out: bytearray, values: Sequence[float]) -> None:
    """One float column in its shortest exact encoding (see the module docstring)."""
    if not any(values):
        out.append(ZERO)
        return
    ints = _as_ints(values, 1)
    if ints is not None:
        dense = bytearray([INTS])
        if min(ints) >= 0:
            dense[0] = UINTS
            put_packed(dense, ints)
        else:
            put_packed(dense, [zigzag(n) for n in ints])
        sparse = bytearray([SPARSE])
        nonzero = [(i, n) for i, n in enumerate(ints) if n]
        put_uvarint(sparse, len(nonzero))
        prev = -1
        for i, n in nonzero:
            put_uvarint(sparse, i - prev - 1)
            put_uvarint(sparse, zigzag(n))
            prev = i
        out += sparse if len(sparse) < len(dense) else dense
        return
    cents = _as_ints(values, 100)
    if cents is not None:
        if min(cents) >= 0:
            out.append(UCENTS)
            put_packed(out, cents)
        else:
            out.append(CENTS)
            put_packed(out, [zigzag(n) for n in cents])
        return
    out.append(FLOAT64)
    out += struct.pack(f"<{len(values)}d", *values)


def read_column(reader: Reader, count: int) -> list[float]:  # noqa: PLR0911 (one per tag)
    """Inverse of :func:`write_column` for a column of ``count`` values."""
    tag = reader.take(1)[0]
    if tag == ZERO:
        return [0.0] * count
    if tag == INTS:
        return [float(unzigzag(z)) for z in reader.packed(count)]
    if tag == CENTS:
        return [unzigzag(z) / 100 for z in reader.packed(count)]
    if tag == UINTS:
        return [float(n) for n in reader.packed(count)]
    if tag == UCENTS:
        return [n / 100 for n in reader.packed(count)]
    if tag == FLOAT64:
        return list(struct.unpack(f"<{count}d", reader.take(8 * count)))
    if tag == SPARSE:
        values = [0.0] * count
        i = -1
        for _ in range(reader.uvarint()):
            i += reader.uvarint() + 1
            if i >= count:
                raise CorruptStateError("sparse column index out of range")
            values[i] = float(unzigzag(reader.uvarint()))
        return values
    raise CorruptStateError(f"unknown column encoding {tag}")


def write_positions(out: bytearray, flags: Sequence[bool]) -> None:
    """Which positions are set: as gaps between set positions, or a bitmap if shorter."""
    set_at = [i for i, f in enumerate(flags) if f]
    gaps = bytearray()
    put_uvarint(gaps, len(set_at))
    prev = -1
    for i in set_at:
        put_uvarint(gaps, i - prev - 1)
        prev = i
    bitmap = bytearray((len(flags) + 7) // 8)
    for i in set_at:
        bitmap[i >> 3] |= 1 << (i & 7)
    if len(bitmap) < len(gaps):
        out.append(1)
        out += bitmap
    else:
        out.append(0)
        out += gaps


def read_positions(reader: Reader, count: int) -> list[int]:
    """Inverse of :func:`write_positions`: the set positions, ascending."""
    kind = reader.take(1)[0]
    if kind == 1:
        bitmap = reader.take((count + 7) // 8)
        return [i for i in range(count) if bitmap[i >> 3] >> (i & 7) & 1]
    if kind != 0:
        raise CorruptStateError(f"unknown position encoding {kind}")
    out, prev = [], -1
    for _ in range(reader.uvarint()):
        prev += reader.uvarint() + 1
        out.append(prev)
    return out
