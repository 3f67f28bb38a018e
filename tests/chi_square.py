"""Chi-square goodness of fit of sampled outcomes against declared shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from scipy.stats import chisquare


def chi_square_p(observed: Counter[str], expected_shares: Mapping[str, float]) -> float:
    """The p-value of `observed` counts under `expected_shares` (normalised to the total).

    Every observed outcome must be an expected one; expected outcomes never
    drawn count as zero.
    """
    total = sum(observed.values())
    labels = sorted(expected_shares)
    assert set(observed) <= set(labels), f"unexpected outcomes {set(observed) - set(labels)}"
    weights = sum(expected_shares.values())
    expected = [total * expected_shares[label] / weights for label in labels]
    return float(chisquare([observed[label] for label in labels], expected).pvalue)
