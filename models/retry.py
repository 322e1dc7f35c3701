"""Jittered exponential backoff: one curve for every retry against AWS in the models."""

from __future__ import annotations

import random


def backoff(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``base * 2**attempt`` up to
    ``cap``, times a uniform jitter in [0.5, 1) so that competing writers spread out."""
    return float(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))
