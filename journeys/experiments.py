"""Message experiments: a step's variants, who gets which, and which one earns more per recipient.

Pure: no I/O, no clock. The send (activities/store_activities.py) and the what-if simulation pick a
variant with `assign`; the experiment report (store/reports/experiments.py) sums each variant's
recipients, conversions and per-recipient revenue (count, sum, sum of squares) in SQL and hands the
sums to `compare`; the send asks `decide` whether the auto-winner rule is met.

The comparison is Bayesian with a flat prior and a normal likelihood for revenue per recipient: each
variant's mean has posterior N(mean, s²/n). A variant with no spread of its own (no orders yet, or all
the same amount) borrows the pooled spread of every recipient, so an arm with no orders is not taken
to be certainly worth 0. The probability that a variant beats every other one is
∫ pdf_i(x) · Π_j cdf_j(x) dx, integrated numerically (Simpson on a fixed grid), so a given set of
sums always gives the same figures; with two variants it equals Φ((m_a - m_b) / √(se_a² + se_b²)).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Z_95 = 1.959963984540054
GRID = 800  # Simpson intervals over ±8 standard errors: far below the 3 decimals the report shows


class Variant(BaseModel):
    """One arm of a step: its own template, or the step's template with another subject line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(min_length=1)
    weight: float = Field(gt=0)
    subject: str | None = Field(default=None, min_length=1)  # a Jinja line replacing the template's Subject
    name: str | None = Field(default=None, min_length=1, max_length=64)  # defaults to the template

    @model_validator(mode="after")
    def _short_label(self) -> Variant:
        if len(self.label) > 64:  # messages.variant holds 64 characters
            raise ValueError("a variant's name is at most 64 characters: give a long template a shorter `name`")
        return self

    @property
    def label(self) -> str:
        return self.name or self.template


class AutoWinner(BaseModel):
    """Once every variant reached `min_recipients` and one beats the others with `probability`,
    every later send of the step goes to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["revenue_per_recipient"] = "revenue_per_recipient"
    min_recipients: int = Field(ge=1)
    probability: float = Field(default=0.95, gt=0.5, lt=1)


def assign(variants: Sequence[Variant], person_id: str, journey: str, step: int) -> Variant:
    """The person's variant of this step: a hash of (journey, step, person) placed on the weights.
    The same person always gets the same variant while the weights stay the same."""
    digest = hashlib.sha256(f"{journey}:{step}:{person_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]  # rounding at the very top of the range


@dataclass(frozen=True)
class Arm:
    """One variant's sums from SQL: recipients (distinct people sent it), how many of them ordered
    (an order credited to it), and the sum and sum of squares of each recipient's credited revenue."""

    name: str
    recipients: int
    conversions: int
    revenue: float
    revenue_squares: float

    @property
    def revenue_per_recipient(self) -> float | None:
        return self.revenue / self.recipients if self.recipients else None

    def variance(self) -> float | None:
        """Sample variance of revenue per recipient (recipients who did not order count as 0)."""
        n = self.recipients
        if n < 2:
            return None
        return max(0.0, (self.revenue_squares - self.revenue**2 / n) / (n - 1))


@dataclass(frozen=True)
class Figures:
    name: str
    recipients: int
    conversions: int
    conversion_rate: float | None
    revenue: float
    revenue_per_recipient: float | None
    interval: tuple[float, float] | None  # 95% credible interval of revenue per recipient
    probability_best: float | None  # that this variant's revenue per recipient beats every other's

    def as_dict(self) -> dict[str, object]:
        return {
            "variant": self.name,
            "recipients": self.recipients,
            "conversions": self.conversions,
            "conversion_rate": _round(self.conversion_rate),
            "revenue": round(self.revenue, 2),
            "revenue_per_recipient": _round(self.revenue_per_recipient),
            "interval": [round(self.interval[0], 4), round(self.interval[1], 4)] if self.interval else None,
            "probability_best": _round(self.probability_best),
        }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def pooled_variance(arms: Sequence[Arm]) -> float | None:
    """Variance of revenue per recipient over every recipient of every variant."""
    n = sum(a.recipients for a in arms)
    total = sum(a.revenue for a in arms)
    if n < 2:
        return None
    return max(0.0, (sum(a.revenue_squares for a in arms) - total**2 / n) / (n - 1))


def posterior(arm: Arm, pooled: float | None) -> tuple[float, float] | None:
    """(mean, standard error) of the variant's revenue per recipient, None below 2 recipients."""
    own = arm.variance()
    if own is None:
        return None
    variance = own if own > 0 else (pooled or 0.0)
    return arm.revenue / arm.recipients, math.sqrt(variance / arm.recipients)


def _cdf(x: float, mean: float, se: float) -> float:
    if se == 0:
        return 1.0 if x > mean else (0.5 if x == mean else 0.0)
    return 0.5 * (1 + math.erf((x - mean) / (se * math.sqrt(2))))


def probability_best(posteriors: Sequence[tuple[float, float]]) -> list[float]:
    """P(variant i's mean > every other's) for independent normal posteriors (mean, se)."""
    chances = []
    for i, (mean, se) in enumerate(posteriors):
        others = [p for j, p in enumerate(posteriors) if j != i]
        if se == 0:
            chances.append(math.prod(_cdf(mean, m, s) for m, s in others))
            continue
        low, step = mean - 8 * se, 16 * se / GRID
        total = 0.0
        for k in range(GRID + 1):
            x = low + k * step
            density = math.exp(-0.5 * ((x - mean) / se) ** 2) / (se * math.sqrt(2 * math.pi))
            weight = 1 if k in (0, GRID) else (4 if k % 2 else 2)
            total += weight * density * math.prod(_cdf(x, m, s) for m, s in others)
        chances.append(min(1.0, total * step / 3))
    return chances


def compare(arms: Sequence[Arm]) -> list[Figures]:
    """Each variant's figures; the interval and probability need 2+ recipients in every variant."""
    pooled = pooled_variance(arms)
    posteriors = [posterior(a, pooled) for a in arms]
    known = [p for p in posteriors if p is not None]
    chances = probability_best(known) if len(known) == len(arms) and len(arms) > 1 else [None] * len(arms)
    return [
        Figures(
            name=arm.name,
            recipients=arm.recipients,
            conversions=arm.conversions,
            conversion_rate=arm.conversions / arm.recipients if arm.recipients else None,
            revenue=arm.revenue,
            revenue_per_recipient=arm.revenue_per_recipient,
            interval=(max(0.0, post[0] - Z_95 * post[1]), post[0] + Z_95 * post[1]) if post else None,
            probability_best=chance,
        )
        for arm, post, chance in zip(arms, posteriors, chances, strict=True)
    ]


def decide(figures: Sequence[Figures], rule: AutoWinner) -> str | None:
    """The winning variant once the rule is met — every variant has `min_recipients` and one beats
    the others with at least `probability` — else None (keep splitting)."""
    if len(figures) < 2 or any(f.recipients < rule.min_recipients for f in figures):
        return None
    best = max(figures, key=lambda f: f.probability_best or 0.0)
    return best.name if best.probability_best is not None and best.probability_best >= rule.probability else None
