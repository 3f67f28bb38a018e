"""JSON files whose values can be pointed at: line, column and caret, like a `.tts` file.

People and demographics files are decoded with `json` first, which is fast;
only when a value must be reported is the text read a second time by
`locate_json`, a small reader that records where each value and each object
key starts and ends. A file is then registered as a source of the check, so
the diagnostic shows its line with a caret under the offending value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from tiny_dsl.source import SourceFile, Span

JsonPath = tuple[str | int, ...]
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def locate_json(text: str) -> tuple[dict[JsonPath, tuple[int, int]], dict[JsonPath, int]]:
    """The offsets of every value (start, end) and of every object key (its opening
    quote), by path. `text` must be valid JSON (decode it with `json` first)."""
    values: dict[JsonPath, tuple[int, int]] = {}
    keys: dict[JsonPath, int] = {}

    def skip(position: int) -> int:
        match = _SPACE.match(text, position)
        return match.end() if match else position

    def value(position: int, path: JsonPath) -> int:
        position = skip(position)
        start = position
        opening = text[position]
        if opening == "{":
            position = skip(position + 1)
            while text[position] != "}":
                key, after_key = scanstring(text, position + 1)
                keys[(*path, key)] = position
                position = skip(skip(after_key) + 1)  # past the `:`
                position = skip(value(position, (*path, key)))
                if text[position] == ",":
                    position = skip(position + 1)
            values[path] = (start, position + 1)
            return position + 1
        if opening == "[":
            position = skip(position + 1)
            index = 0
            while text[position] != "]":
                position = skip(value(position, (*path, index)))
                index += 1
                if text[position] == ",":
                    position = skip(position + 1)
            values[path] = (start, position + 1)
            return position + 1
        _scalar, end = _DECODER.raw_decode(text, position)
        values[path] = (start, end)
        return int(end)

    value(0, ())
    return values, keys


@dataclass
class JsonFile:
    """A decoded JSON file; its source and positions are made only when first asked for."""

    display: str  # the path diagnostics show
    text: str
    data: Any
    sources: dict[str, SourceFile]  # the check's sources, where this file is added when shown
    _values: dict[JsonPath, tuple[int, int]] | None = field(default=None, repr=False)
    _keys: dict[JsonPath, int] = field(default_factory=dict, repr=False)

    @property
    def source(self) -> SourceFile:
        source = self.sources.get(self.display)
        if source is None:
            source = self.sources[self.display] = SourceFile(self.display, self.text)
        return source

    def _located(self) -> dict[JsonPath, tuple[int, int]]:
        if self._values is None:
            self._values, self._keys = locate_json(self.text)
        return self._values

    def value_span(self, path: JsonPath) -> Span:
        """The value at `path`, or the nearest enclosing value that exists."""
        values = self._located()
        for length in range(len(path), -1, -1):
            found = values.get(path[:length])
            if found is not None:
                return self.source.span(*found)
        return self.source.span(0, 0)

    def key_span(self, path: JsonPath) -> Span:
        """The key (with its quotes) of the object member at `path`, else its value."""
        self._located()
        start = self._keys.get(path)
        if start is None:
            return self.value_span(path)
        _key, end = scanstring(self.text, start + 1)
        return self.source.span(start, end)

    def start_span(self, path: JsonPath) -> Span:
        """The first character of the value at `path` (an object's `{`): where a missing
        member is reported, so the caret marks the record and not its whole text."""
        span = self.value_span(path)
        return self.source.span(span.start, span.start + 1)
