"""The book's one rule for "A beats B": a paired comparison over seeds.

Both arms run with the same seeds (the same initial weights and data order
where the two networks allow it), so the comparison is made seed by seed: the
differences ``d_i = a_i - b_i`` remove what a seed does to both arms alike.
Their mean gets a 95 % t-interval from the sample standard deviation,

    mean(d) +- t_{0.975, n-1} * s_d / sqrt(n),

and a claim about the mean difference has three outcomes:

* **reproduced**: the whole interval lies on the claimed side of the threshold;
* **contradicted**: the whole interval lies on the other side;
* **inconclusive**: the interval contains the threshold.

The half-width of the interval is the smallest difference this setup
(these seeds, this spread) can resolve; it is reported beside every verdict.
The book's full build runs at least 5 seeds per arm; quick mode runs fewer,
and its verdicts say that they mean nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
from scipy import stats

from normtext import quick_mode

__all__ = ["CLAIMS", "OUTCOMES", "Verdict", "paired_verdict", "verdict_rows"]

OUTCOMES = ("reproduced", "contradicted", "inconclusive")
# what a claim says about the mean of a - b, for a threshold t >= 0
CLAIMS = {"greater": "a - b > t", "less": "a - b < -t", "equal": "|a - b| < t"}
QUICK_NOTE = "quick mode: too few seeds and epochs, this verdict means nothing"

Values = Union[Sequence[float], Mapping[object, float]]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one paired comparison, with the numbers it rests on."""

    claim: str          # the claim in words, as the book states it
    outcome: str        # one of OUTCOMES
    kind: str           # "greater", "less" or "equal" (see CLAIMS)
    threshold: float
    mean: float         # mean of the paired differences a - b
    low: float          # the 95 % t-interval of that mean
    high: float
    resolution: float   # the interval's half-width: the smallest resolvable difference
    n: int              # seeds (pairs)
    quick: bool

    @property
    def reproduced(self) -> bool:
        return self.outcome == "reproduced"

    @property
    def contradicted(self) -> bool:
        return self.outcome == "contradicted"

    def say(self, reproduced: str, contradicted: str, inconclusive: str) -> str:
        """The sentence that fits the outcome, so that a chapter's prose stays true on a rerun."""
        text = {"reproduced": reproduced, "contradicted": contradicted,
                "inconclusive": inconclusive}[self.outcome]
        return text + (f" ({QUICK_NOTE})" if self.quick else "")

    def __str__(self) -> str:
        line = (f"{self.outcome}: {self.claim}: difference {self.mean:+.3g}, "
                f"95% CI [{self.low:+.3g}, {self.high:+.3g}] over {self.n} seeds, "
                f"threshold {self.threshold:.3g}, resolves {self.resolution:.2g}")
        return line + (f" ({QUICK_NOTE})" if self.quick else "")


def _pairs(a: Values, b: Values) -> np.ndarray:
    """The differences a_i - b_i, paired by seed (by key when both are mappings)."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("pass both arms as sequences, or both as {seed: value} mappings")
        if set(a) != set(b):
            raise ValueError(f"the arms ran different seeds: {sorted(a)} vs {sorted(b)}; "
                             "a paired comparison needs the same seeds in both")
        keys = sorted(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"one value per seed in each arm, in the same order; got shapes "
                         f"{a.shape} and {b.shape}")
    return a - b


def paired_verdict(a: Values, b: Values, *, claim: str = "", kind: str = "greater",
                   threshold: float = 0.0, quick: bool | None = None,
                   confidence: float = 0.95) -> Verdict:
    """Judge a claim about arm ``a`` against arm ``b`` from one value per seed each.

    Args:
        a, b: the measurements of the two arms, one per seed, in the same seed
            order (or two ``{seed: value}`` mappings with the same seeds).
        claim: the claim in words, for the book's table.
        kind: ``"greater"`` (a exceeds b by more than ``threshold``), ``"less"``
            (a is below b by more than ``threshold``) or ``"equal"`` (they differ
            by less than ``threshold``, which must then be positive).
        threshold: the size of difference the claim is about, ``>= 0``.
        quick: mark the verdict as a quick-mode one (default: ``NORMTEXT_QUICK``).
        confidence: the interval's coverage.

    Example::

        >>> v = paired_verdict([0.91, 0.93, 0.90], [0.85, 0.88, 0.86], claim="BN beats no BN",
        ...                    quick=False)
        >>> v.outcome
        'reproduced'
    """
    if kind not in CLAIMS:
        raise ValueError(f"kind must be one of {sorted(CLAIMS)}, got {kind!r}")
    if threshold < 0 or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    if kind == "equal" and threshold == 0:
        raise ValueError("an 'equal' claim needs a positive threshold (the largest difference "
                         "that still counts as equal)")
    d = _pairs(a, b)
    n = len(d)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 seeds per arm, got {n}: "
                         "run more seeds (the full build runs at least 5)")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if kind == "greater":
        outcome = OUTCOMES[0] if low > threshold else OUTCOMES[1] if high < threshold else OUTCOMES[2]
    elif kind == "less":
        outcome = OUTCOMES[0] if high < -threshold else OUTCOMES[1] if low > -threshold else OUTCOMES[2]
    else:
        inside = -threshold < low and high < threshold
        outside = high < -threshold or low > threshold
        outcome = OUTCOMES[0] if inside else OUTCOMES[1] if outside else OUTCOMES[2]
    return Verdict(claim=claim, outcome=outcome, kind=kind, threshold=float(threshold),
                   mean=mean, low=low, high=high, resolution=half, n=n,
                   quick=quick_mode() if quick is None else bool(quick))


def verdict_rows(verdicts: Sequence[Verdict]) -> list[dict]:
    """One table row per verdict (for ``pandas.DataFrame``): the claim, the numbers, the outcome."""
    return [{"claim": v.claim, "mean difference": v.mean,
             "95% interval": f"[{v.low:+.3g}, {v.high:+.3g}]", "threshold": v.threshold,
             "resolves": v.resolution, "seeds": v.n,
             "verdict": v.outcome + (" (quick: not meaningful)" if v.quick else "")}
            for v in verdicts]
