"""Plan origins for hand-built test plans, written as `file:line:col`."""

from __future__ import annotations

from tiny_dsl.plan.model import Origin


def origin_at(where: str = "test.tts:1:1") -> Origin:
    """The origin of a one-character statement at `file:line:col`."""
    file, line, column = where.rsplit(":", 2)
    return Origin(
        file=file,
        start=0,
        end=1,
        line=int(line),
        column=int(column),
        end_line=int(line),
        end_column=int(column) + 1,
    )


ORIGIN = origin_at()
