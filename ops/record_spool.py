"""Records to produce, generated once and kept in a file instead of in memory.

The bench and the chaos suite generate a phase's messages before its clock starts, so the
generator's cost is not measured as the system's. Held as Python objects, a million orders of
native channel payloads took 9 GB of the bench process: with Redis and the broker holding the
same orders, a 1M-order run did not fit in 24 GB. Spooled to a temporary file (msgpack frames,
each with a 4-byte length) they take the page cache instead, and are read back in order while
they are sent. The file is deleted when the spool is closed or collected.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec

from core.kafka import Record

_LENGTH = 4
_READ_CHUNK = 1 << 20


class RecordSpool:
    """Append records, then iterate them (as many times as needed) in the order appended."""

    def __init__(self, directory: Path | None = None) -> None:
        # Open for the spool's life (close() or collection deletes it): not a with-block.
        self._file = tempfile.TemporaryFile(dir=directory, prefix="oms-spool-")  # noqa: SIM115
        self._encode = msgspec.msgpack.Encoder().encode
        self._decoder = msgspec.msgpack.Decoder(Record)
        self._count = 0
        self._size = 0
        self.value_bytes = 0  # the values' bytes: what a burst weighs on the wire

    def append(self, record: Record) -> None:
        frame = self._encode(record)
        self._file.write(len(frame).to_bytes(_LENGTH, "big"))
        self._file.write(frame)
        self._count += 1
        self._size += _LENGTH + len(frame)
        self.value_bytes += len(record[2])

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Record]:
        self._file.flush()
        fd, offset, buffer, pos = self._file.fileno(), 0, b"", 0
        while True:
            if len(buffer) - pos >= _LENGTH:
                end = pos + _LENGTH + int.from_bytes(buffer[pos : pos + _LENGTH], "big")
                if end <= len(buffer):
                    yield self._decoder.decode(memoryview(buffer)[pos + _LENGTH : end])
                    pos = end
                    continue
            if offset >= self._size:
                if pos != len(buffer):
                    raise OSError("record spool ends inside a frame")
                return
            chunk = os.pread(fd, _READ_CHUNK, offset)
            if not chunk:
                raise OSError("record spool is shorter than what was written")
            buffer, pos = buffer[pos:] + chunk, 0  # one copy per chunk, not per record
            offset += len(chunk)

    def close(self) -> None:
        self._file.close()
