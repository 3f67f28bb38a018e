"""Source files and spans: where things are, in the author's terms.

Every syntax node, diagnostic and plan step points back at a `Span`, so that any
message, at any stage, can show the author the line they wrote.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_NEWLINE = re.compile("\n")

# The largest file read, in UTF-8 bytes: ten times a 10,000-line scenario,
# which parses in seconds. A larger one is refused before it is read in full,
# so that time and memory stay bounded.
MAX_SOURCE_BYTES = 2 * 1024 * 1024


class SourceTooLarge(Exception):
    """A file over `MAX_SOURCE_BYTES`; `size` is at least the bytes seen."""

    def __init__(self, size: int):
        super().__init__(f"{size:,} bytes, more than {MAX_SOURCE_BYTES:,}")
        self.size = size


def read_source_text(path: Path | str) -> str:
    """The UTF-8 text of `path`, newlines as `\\n`; `SourceTooLarge` past the limit.

    At most one byte past the limit is read, so a huge file, or a device that
    never ends, costs no more than a file at the limit.
    """
    with open(path, "rb") as stream:  # a str path too: 10,000 files need no Path objects
        data = stream.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise SourceTooLarge(max(len(data), os.fstat(stream.fileno()).st_size))
    # As text-mode reading does: `\r\n` and `\r` end lines too.
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True, order=True)
class Span:
    """A region of one source file. Lines and columns are 1-based; offsets 0-based."""

    file: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def origin(self) -> str:
        """`file:line:col`, the form compilers and editors understand."""
        return f"{self.file}:{self.line}:{self.column}"

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(
            self.file,
            self.start,
            other.end,
            self.line,
            self.column,
            other.end_line,
            other.end_column,
        )


@dataclass(frozen=True)
class SourceFile:
    """The text of one `.tts` file and the name it is shown under."""

    path: str
    text: str
    _line_starts: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        starts = [0, *(match.end() for match in _NEWLINE.finditer(self.text))]
        object.__setattr__(self, "_line_starts", starts)

    @classmethod
    def read(cls, path: Path, display: str | None = None) -> SourceFile:
        return cls(display or str(path), read_source_text(path))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline."""
        if line < 1 or line > len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start : end if end != -1 else len(self.text)].rstrip("\r")

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based (line, column) of a 0-based offset."""
        low, high = 0, len(self._line_starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self._line_starts[middle] <= offset:
                low = middle
            else:
                high = middle - 1
        return low + 1, offset - self._line_starts[low] + 1

    def span(self, start: int, end: int) -> Span:
        line, column = self.position(start)
        end_line, end_column = self.position(end)
        return Span(self.path, start, end, line, column, end_line, end_column)
