"""Deterministic train/val/test assignment by subject, so no subject leaks across splits.

Subjects are ordered by the sha256 of ``"<seed>:<subject>"`` (stable across machines and
independent of input order), then cut by the ratios with largest-remainder rounding. Every
split with a non-zero ratio gets at least one subject as long as train keeps one, so two
subjects give train = 1, val = 1.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def assign_splits(subjects: list[str], ratios: tuple[float, float, float], seed: int = 0) -> dict[str, str]:
    """Map each subject to ``"train"``, ``"val"`` or ``"test"``."""
    subs = sorted(set(subjects), key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(subs)
    total = sum(ratios)
    exact = [r / total * n for r in ratios]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in (1, 2):
        if ratios[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i], counts[0] = 1, counts[0] - 1
    out: dict[str, str] = {}
    start = 0
    for split, c in zip(SPLITS, counts, strict=True):
        for s in subs[start : start + c]:
            out[s] = split
        start += c
    return out
