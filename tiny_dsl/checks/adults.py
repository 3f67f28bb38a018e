"""The adults rule: TinyTroupe's demography files describe whole countries, children
included, so a population sampled from one is sampled from 18 up unless a segment
constrains `age` itself (`age 0..17` for a study of children). Inline demographics
keep their own ages: the author wrote them for the population.
"""

from __future__ import annotations

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context
from tiny_dsl.source import Span

ADULT_AGE = 18


def adult_segments(
    ctx: Context,
    population: str,
    span: Span,
    demographics: m.Demographics | None,
    segments: list[m.Segment],
) -> list[m.Segment]:
    """Segments of a population sampled from a demography file whose ages start below 18:
    each without an `age` constraint of its own is sampled from 18 up (a note says so)."""
    if demographics is None or demographics.source_path is None:
        return segments
    age = next((d for d in demographics.distributions if d.attribute == "age"), None)
    if age is None or not age.is_numeric:
        return segments
    lowest = min(share.low for share in age.shares if share.low is not None)
    highest = max(share.high for share in age.shares if share.high is not None)
    if lowest >= ADULT_AGE or highest < ADULT_AGE:
        return segments
    adjusted: list[m.Segment] = []
    changed: list[str] = []
    for segment in segments:
        if any(c.attribute == "age" for c in segment.constraints):
            adjusted.append(segment)
            continue
        changed.append(segment.name)
        adult = m.Constraint("age", float(ADULT_AGE), highest)
        adjusted.append(
            m.Segment(
                segment.name,
                segment.size,
                (*segment.constraints, adult),
                segment.particularities,
                segment.fragments,
                segment.span,
            )
        )
    if changed:
        ctx.report(
            diag.note(
                codes.ADULTS_ONLY,
                f"members of `{population}` are sampled from age {ADULT_AGE} up: the ages of "
                f"`{demographics.source_path}` start at {lowest:g}",
                span,
                f"adults only ({', '.join(f'`{n}`' for n in changed)})",
                help=["to sample children, constrain `age` in a segment: `age 0..17`"],
            )
        )
    return adjusted
