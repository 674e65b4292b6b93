"""How many of ``count`` things a share of them is: one rule for every bank, coreset and trusted set.

The floors' corroborated share of the images rounds up instead (``NearestNeighbourScorer._exempt_entries``).
"""

from __future__ import annotations


def share_count(share: float, count: int) -> int:
    """``share`` of ``count``, rounded to the nearest whole number (halves to even, Python's ``round``), at least 1."""
    return max(1, int(round(share * count)))
