"""Seeded sampling of population members from their demographics.

Each member gets its own `random.Random`, seeded from
sha256(f"{seed}:{population}:{index}"). A member's attributes therefore depend
only on the scenario seed, the population's name, the member's index and its
segment: growing a population or reordering other declarations never changes
the members already there, and no draw depends on hash randomisation.

A segment's constraints are honoured exactly, not by rejection: the
distribution is restricted to what the constraint allows and renormalised, so
a segment `age 25..35` draws from the population's own age profile between 25
and 35. The restricted distributions are prepared once per segment
(`MemberSampler`), so sampling 10,000 members costs 10,000 cheap draws and no
per-member copy of the demographics.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from tiny_dsl.checks.model import Constraint, Demographics, Distribution


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from sha256 of the parts joined by ":".

    `random.Random(int)` is stable across Python versions and platforms, unlike
    seeding from `hash()` or from a string under a different PYTHONHASHSEED.
    """
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def member_rng(seed: int, population: str, index: int) -> random.Random:
    """The generator of one population member (`index` as in its agent id)."""
    return seeded_rng(seed, population, index)


def sample_loaded(seed: int, population: str, available: int, size: int) -> list[int]:
    """Which of a loaded population's people take part: all of them, or a seeded sample
    of `size` without replacement, in file order (indices into the file's people)."""
    if size >= available:
        return list(range(available))
    return sorted(seeded_rng(seed, population, "members").sample(range(available), size))


@dataclass(frozen=True)
class _Categorical:
    attribute: str
    labels: tuple[str, ...]
    cumulative: tuple[float, ...]

    def draw(self, rng: random.Random) -> str:
        return self.labels[_pick(self.cumulative, rng)]


@dataclass(frozen=True)
class _Numeric:
    """Integer ranges (inclusive), one per bracket that can be drawn, with their weights."""

    attribute: str
    ranges: tuple[tuple[int, int], ...]
    cumulative: tuple[float, ...]

    def draw(self, rng: random.Random) -> int:
        low, high = self.ranges[_pick(self.cumulative, rng)]
        return rng.randint(low, high)


def _pick(cumulative: tuple[float, ...], rng: random.Random) -> int:
    """Index drawn with probability proportional to its weight (zero weights never win)."""
    point = rng.random() * cumulative[-1]
    return min(bisect.bisect_right(cumulative, point), len(cumulative) - 1)


class MemberSampler:
    """Draws the attributes of the members of one segment.

    Attributes come in the demographics' declaration order, then any attribute
    only the segment constrains (drawn uniformly from what it allows), so the
    draw sequence, and with it every member, is fixed by the declarations.
    """

    def __init__(self, demographics: Demographics, constraints: Sequence[Constraint]) -> None:
        by_attribute = {constraint.attribute: constraint for constraint in constraints}
        drawers: list[_Categorical | _Numeric] = []
        for distribution in demographics.distributions:
            drawers.append(_prepare(distribution, by_attribute.pop(distribution.attribute, None)))
        for constraint in constraints:
            if constraint.attribute in by_attribute:
                drawers.append(_from_constraint_alone(constraint))
        self._drawers = tuple(drawers)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {drawer.attribute: drawer.draw(rng) for drawer in self._drawers}


def _prepare(distribution: Distribution, constraint: Constraint | None) -> _Categorical | _Numeric:
    if distribution.is_numeric:
        drawer: _Categorical | _Numeric | None = _prepare_numeric(distribution, constraint)
    else:
        drawer = _prepare_categorical(distribution, constraint)
    if drawer is not None:
        return drawer
    if constraint is None:
        raise ValueError(f"distribution `{distribution.attribute}` has no share to draw from")
    # The constraint leaves the declared distribution no mass: what it allows decides alone.
    return _from_constraint_alone(constraint)


def _prepare_categorical(
    distribution: Distribution, constraint: Constraint | None
) -> _Categorical | None:
    # The checker has already given an undeclared remainder to `other`; what is left
    # is rounding (within its tolerance), absorbed by drawing in proportion to the shares.
    labels = [share.label for share in distribution.shares]
    weights = [share.share for share in distribution.shares]
    if constraint is not None and constraint.labels:
        allowed = set(constraint.labels)
        weights = [w if label in allowed else 0.0 for label, w in zip(labels, weights, strict=True)]
    if sum(weights) <= 0:
        return None
    return _Categorical(distribution.attribute, tuple(labels), tuple(accumulate(weights)))


def _prepare_numeric(distribution: Distribution, constraint: Constraint | None) -> _Numeric | None:
    """Brackets intersected with the constraint's range, each weighted by the part kept.

    Within a bracket values are taken as uniform, so a bracket `35..44` cut
    down to `35..35` keeps a tenth of its share: the segment's profile is the
    population's own, restricted, and not skewed towards the cut edges.
    Values are whole numbers (ages, years, counts); bracket bounds are inclusive.
    """
    ranges: list[tuple[int, int]] = []
    weights: list[float] = []
    for share in distribution.shares:
        assert share.low is not None and share.high is not None  # is_numeric
        low, high = math.ceil(share.low), math.floor(share.high)
        kept_low, kept_high = low, high
        if constraint is not None and constraint.low is not None:
            kept_low = max(low, math.ceil(constraint.low))
        if constraint is not None and constraint.high is not None:
            kept_high = min(high, math.floor(constraint.high))
        if kept_low > kept_high or share.share <= 0:
            continue
        ranges.append((kept_low, kept_high))
        weights.append(share.share * (kept_high - kept_low + 1) / (high - low + 1))
    if not ranges:
        return None
    return _Numeric(distribution.attribute, tuple(ranges), tuple(accumulate(weights)))


def _from_constraint_alone(constraint: Constraint) -> _Categorical | _Numeric:
    """Uniform over what a constraint allows: for an attribute the demographics do not
    describe, or describe with no mass inside the constraint."""
    if constraint.labels:
        labels = tuple(constraint.labels)
        return _Categorical(
            constraint.attribute, labels, tuple(float(i + 1) for i in range(len(labels)))
        )
    if constraint.low is None or constraint.high is None:
        raise ValueError(f"constraint on `{constraint.attribute}` needs a range or labels")
    low, high = math.ceil(constraint.low), math.floor(constraint.high)
    if low > high:
        raise ValueError(f"constraint on `{constraint.attribute}` admits no whole number")
    return _Numeric(constraint.attribute, ((low, high),), (1.0,))


def vary_slots(seed: int, population: str, dimension: str, values: int, size: int) -> list[int]:
    """The slot (0..values-1) of each of `size` members on one `vary` dimension.

    Quota exact: a seeded permutation of the slots, repeated until there is one
    per member, so each slot is used floor or ceil(size / values) times (which
    slots get the extra member is the permutation's first `size % values`); the
    list is then shuffled with the same generator, so no member's slot depends on
    its position in the population (segments are contiguous runs of members).
    """
    rng = seeded_rng(seed, "vary", population, dimension)
    order = list(range(values))
    rng.shuffle(order)
    slots = [order[position % values] for position in range(size)]
    rng.shuffle(slots)
    return slots


def control_count(targets: int, control: float) -> int:
    """How many of `targets` form the control group: the share rounded half up, and at
    least one whenever there is a control share and two targets to split."""
    count = math.floor(targets * control + 0.5)
    if control > 0 and targets >= 2:
        count = max(count, 1)
    return min(count, targets)


def assign_arms(
    seed: int,
    intervention: str,
    targets: Sequence[str],
    strata: Sequence[str],
    control: float,
    variants: Sequence[str],
) -> dict[str, str]:
    """Assign each target to a variant or to "control", reproducibly from the seed.

    `strata[i]` is the stratum of `targets[i]` (one value for all targets when
    assignment is plain random). The overall control group has
    `control_count(len(targets), control)` members, apportioned to the strata
    in proportion to their sizes (largest remainder, ties drawn at random).
    Within a stratum the treated members are split across variants with sizes
    differing by at most one, and the spare members go to the variants that
    are smallest overall so far, so arms are balanced within every stratum and
    overall. Returns agent id -> arm, in target order.
    """
    if not variants:
        raise ValueError(f"intervention `{intervention}` has no variant to assign")
    rng = seeded_rng(seed, "assign", intervention)
    groups: dict[str, list[str]] = {}
    for target, stratum in zip(targets, strata, strict=True):
        groups.setdefault(stratum, []).append(target)
    sizes = [len(members) for members in groups.values()]
    controls = _apportion(control_count(len(targets), control), sizes, rng)
    totals = dict.fromkeys(variants, 0)
    arm_of: dict[str, str] = {}
    for members, in_control in zip(groups.values(), controls, strict=True):
        shuffled = list(members)
        rng.shuffle(shuffled)
        for agent in shuffled[:in_control]:
            arm_of[agent] = "control"
        treated = shuffled[in_control:]
        base, spare = divmod(len(treated), len(variants))
        tie_break = list(variants)
        rng.shuffle(tie_break)
        larger = set(sorted(tie_break, key=totals.__getitem__)[:spare])
        arms = [v for v in variants for _ in range(base + (1 if v in larger else 0))]
        for agent, arm in zip(treated, arms, strict=True):
            arm_of[agent] = arm
            totals[arm] += 1
    return {target: arm_of[target] for target in targets}


def _apportion(total: int, sizes: Sequence[int], rng: random.Random) -> list[int]:
    """Split `total` across groups in proportion to `sizes` (Hamilton's method, exact
    integer arithmetic; ties for the spare units are broken by `rng`)."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    shares = [divmod(total * size, whole) for size in sizes]
    result = [quotient for quotient, _ in shares]
    order = list(range(len(sizes)))
    rng.shuffle(order)
    order.sort(key=lambda i: -shares[i][1])
    for i in order[: total - sum(result)]:
        result[i] += 1
    return result
