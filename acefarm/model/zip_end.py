"""What a zip declares in its end record (entry count, central directory size), read without opening it.

`zipfile.ZipFile` reads and parses the whole central directory when it opens a zip (about 500 bytes of
Python objects per entry), before anyone can count the entries. `read_zip_end` reads only the
end-of-central-directory record (and its zip64 form) from the file's tail, found the way `zipfile`
finds it, so a caller can refuse a zip whose directory is too large before `zipfile` reads it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_EOCD = struct.Struct("<4s4H2LH")
"""signature, disk, disk of the directory, entries on this disk, entries, directory size, offset, comment size"""
_EOCD_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")
"""signature, disk of the zip64 record, its offset, number of disks"""
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
"""signature, record size, versions, disk, disk of the directory, entries on this disk, entries, size, offset"""
_EOCD64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF


@dataclass(frozen=True)
class ZipEnd:
    """The counts a zip's end record declares (the zip64 record's when there is one, as `zipfile` reads it)."""

    entries: int
    """The larger of 'entries on this disk' and 'entries in total'."""
    directory_bytes: int
    """Size of the central directory: what `zipfile` reads and parses on open."""


def read_zip_end(path: Path) -> ZipEnd | None:
    """The zip's end record, or None when the file has none (it is not a zip)."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < _EOCD.size:
            return None
        f.seek(size - _EOCD.size)
        last = f.read(_EOCD.size)
        if last.startswith(_EOCD_SIGNATURE) and last.endswith(b"\x00\x00"):
            return _with_zip64(f, size - _EOCD.size, _EOCD.unpack(last))
        start = max(size - _MAX_COMMENT - _EOCD.size, 0)
        f.seek(start)
        tail = f.read()
        found = tail.rfind(_EOCD_SIGNATURE)
        if found < 0 or len(tail) - found < _EOCD.size:
            return None
        return _with_zip64(f, start + found, _EOCD.unpack_from(tail, found))


def _with_zip64(f: BinaryIO, eocd_at: int, eocd: tuple[bytes, int, int, int, int, int, int, int]) -> ZipEnd:
    """The zip64 record's counts when a locator sits just before the end record (where `zipfile` looks)."""
    _, _, _, on_disk, total, directory_bytes, _, _ = eocd
    plain = ZipEnd(max(on_disk, total), directory_bytes)
    locator_at = eocd_at - _LOCATOR.size
    record_at = locator_at - _EOCD64.size
    if record_at < 0:
        return plain
    f.seek(record_at)
    data = f.read(_EOCD64.size + _LOCATOR.size)
    locator = _LOCATOR.unpack_from(data, _EOCD64.size)
    if locator[0] != _LOCATOR_SIGNATURE:
        return plain
    record = _EOCD64.unpack_from(data)
    if record[0] != _EOCD64_SIGNATURE:
        return plain
    return ZipEnd(max(record[6], record[7]), record[8])
