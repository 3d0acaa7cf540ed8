"""Hostile model files for tests: zip bombs (outer member or a record inside weights.pt) and
cards that lie about the weights beside them. Built by hand, in seconds, never inflated here."""
from __future__ import annotations

import functools
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

MB = 1 << 20


@functools.lru_cache(maxsize=4)
def zeros_deflated(megabytes: int) -> tuple[bytes, int]:
    """(raw deflate stream, crc32) of ``megabytes`` MB of zeros. After a full flush the
    compressor starts afresh, so every further megabyte compresses to the same bytes: the
    stream is one segment repeated, ~1 kB per MB (a 1000:1 bomb)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MB)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert first == again
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(chunk, crc)
    return first * megabytes + c.flush(), crc


def write_zip(path: Path | io.BytesIO, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of (name, data as stored, method 0/8, inflated size, crc32) members, written by
    hand: zipfile cannot store a stream it did not compress itself."""
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc in members:
        raw = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size,
                           len(raw), 0) + raw + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                               size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    blob = bytes(out + central + end)
    if isinstance(path, io.BytesIO):
        path.write(blob)
    else:
        Path(path).write_bytes(blob)


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, len(data), zlib.crc32(data)


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def bomb_model(good: Path, out: Path, megabytes: int = 1536) -> Path:
    """``good``'s card beside a weights.pt that deflates from ~1.5 MB to ``megabytes`` MB."""
    data, crc = zeros_deflated(megabytes)
    write_zip(out, [stored("card.json", members_of(good)["card.json"]),
                    ("weights.pt", data, 8, megabytes * MB, crc)])
    return out


def inner_bomb_model(good: Path, out: Path, megabytes: int = 1536) -> Path:
    """``good``'s card and weights, but one tensor record inside weights.pt (torch's zip) is a
    deflated bomb: what torch.load would inflate."""
    parts = members_of(good)
    with zipfile.ZipFile(io.BytesIO(parts["weights.pt"])) as inner:
        records = {n: inner.read(n) for n in inner.namelist()}
    bomb_name = next(n for n in records if n.endswith("/data/0"))
    data, crc = zeros_deflated(megabytes)
    weights = io.BytesIO()
    write_zip(weights, [(bomb_name, data, 8, megabytes * MB, crc) if n == bomb_name else stored(n, d)
                        for n, d in records.items()])
    write_zip(out, [stored("card.json", parts["card.json"]), stored("weights.pt", weights.getvalue())])
    return out


def lying_model(good: Path, out: Path, **card_changes) -> Path:
    """``good``'s weights with a card whose fields are changed (dims, backbone, head, ...)."""
    parts = members_of(good)
    card = {**json.loads(parts["card.json"]), **card_changes}
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("card.json", json.dumps(card), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("weights.pt", parts["weights.pt"])
    return out
