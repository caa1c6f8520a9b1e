"""Three-valued verdicts on a paper's claims and the `Finding` that carries them (docs/design.md §3).

The rules are fixed here, before any run is looked at: a claim names a quantity, the side of a
threshold the paper puts it on (0 for a direction, −margin for "close to, or above"), and the run's
95 % interval decides: *reproduced* when the whole interval is on the paper's side, *contradicted*
when it is wholly on the other, *inconclusive* otherwise (also when the run cannot compute it).
A claim of several parts ("beats on R and G, Locality about equal") is reproduced when every part
is, contradicted when any part is, and inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knowtune.report.html import interval_figure
from knowtune.studies.stats import Interval

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
VERDICT_CLASSES = {REPRODUCED: "yes", CONTRADICTED: "no", INCONCLUSIVE: "na"}  # the report's CSS classes
SCHEMA_VERSION = 2
SCHEMA_NOTE = ("2: every finding carries estimate, ci [low, high], verdict (reproduced / contradicted / inconclusive), "
               "rule, detectable (the interval's half width), threshold and units, from a bootstrap over seeds and test "
               "questions (or an exact test, where the rule says so); the boolean `reproduced` (and flearning's "
               "`reproduced_by_protocol`) of version 1 are replaced by `verdict` (`verdict_by_protocol`), and self-align's "
               "claims over HOMO, ID and OOD (with `per_split`) by one finding per claim and split (`split`). "
               "1: yes / no on means.")


@dataclass(frozen=True)
class Check:
    """One quantity's test: its estimate and interval (None when this run cannot compute it), the verdict, the rule."""

    estimate: float | None
    ci: tuple[float, float] | None
    verdict: str
    rule: str
    label: str = ""
    parts: tuple[Check, ...] = ()
    threshold: float = 0.0  # the side of it the paper claims is in the rule
    units: str = "points"  # what the estimate is measured in; not points (a correlation) prints two decimals

    @property
    def detectable(self) -> float | None:
        """The interval's half width: differences smaller than this, this run cannot tell from zero."""
        return None if self.ci is None else (self.ci[1] - self.ci[0]) / 2

    def to_dict(self) -> dict:
        """estimate, ci, verdict, rule, detectable (and `parts`, for a claim of several)."""
        d = {"estimate": self.estimate, "ci": None if self.ci is None else list(self.ci), "verdict": self.verdict,
             "rule": self.rule, "detectable": self.detectable, "threshold": self.threshold, "units": self.units}
        if self.parts:
            d["parts"] = [{"label": p.label, **p.to_dict()} for p in self.parts]
        return d


def _side(threshold: float, above: bool) -> str:
    return f"{'above' if above else 'below'} {threshold:+g}" if threshold else f"{'above' if above else 'below'} 0"


def check(interval: Interval | None, threshold: float = 0.0, above: bool = True, label: str = "", units: str = "points") -> Check:
    """The verdict on one quantity the paper puts above (or below) `threshold`."""
    rule = (f"reproduced if the 95 % interval lies {_side(threshold, above)} {units}, contradicted if it lies "
            f"{_side(threshold, not above)}, inconclusive otherwise")
    if interval is None:
        return Check(None, None, INCONCLUSIVE, rule, label, threshold=threshold, units=units)
    lo, hi = interval.low, interval.high
    if (lo > threshold) if above else (hi < threshold):
        verdict = REPRODUCED
    elif (hi < threshold) if above else (lo > threshold):
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Check(interval.estimate, (lo, hi), verdict, rule, label, threshold=threshold, units=units)


def combine(parts: list[Check]) -> Check:
    """All parts must be reproduced; one contradicted part contradicts the claim. The claim's estimate and
    interval are those of the part that decides: the first contradicted, else the first inconclusive, else
    the first part."""
    verdicts = [p.verdict for p in parts]
    verdict = CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else REPRODUCED
    deciding = next(p for p in parts if p.verdict == verdict)
    rule = "reproduced if every part is, contradicted if any part is, inconclusive otherwise; parts: " + "; ".join(
        f"{p.label}: {p.rule}" for p in parts)
    return Check(deciding.estimate, deciding.ci, verdict, rule, deciding.label, tuple(parts), deciding.threshold,
                 deciding.units)


def _digits(c: Check) -> int:
    """One decimal for points, two for anything else (a correlation lies in [-1, 1])."""
    return 1 if "points" in c.units else 2


def fmt_check(c: Check, digits: int | None = None) -> str:
    """'estimate [low, high]' (n/a when not computed)."""
    if c.estimate is None:
        return "n/a"
    digits = _digits(c) if digits is None else digits
    return f"{c.estimate:+.{digits}f} [{c.ci[0]:+.{digits}f}, {c.ci[1]:+.{digits}f}]"


@dataclass
class Finding:
    """One claim of a paper against this run: in results.json the keys claim, paper, this_run, estimate,
    ci, verdict, rule and detectable (see `Check`), then any study-specific `extra` keys."""

    claim: str
    paper: str
    this_run: str
    check: Check
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON shape of results.json's `findings` entries."""
        return {"claim": self.claim, "paper": self.paper, "this_run": self.this_run, **self.check.to_dict(), **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        """Read one `findings` entry back (the parts of a combined claim stay in `extra`)."""
        core = ("claim", "paper", "this_run", "estimate", "ci", "verdict", "rule", "detectable", "threshold", "units")
        ci = None if d.get("ci") is None else tuple(d["ci"])
        return cls(d["claim"], d["paper"], d["this_run"], Check(d["estimate"], ci, d["verdict"], d["rule"],
                                                                 threshold=d.get("threshold", 0.0), units=d.get("units", "points")),
                   extra={k: v for k, v in d.items() if k not in core})

    @property
    def verdict(self) -> str:
        """'reproduced', 'contradicted' or 'inconclusive'."""
        return self.check.verdict

    @property
    def summary(self) -> str:
        """'estimate [low, high]', with the half width this run could detect."""
        c = self.check
        return "n/a" if c.estimate is None else f"{fmt_check(c)} (±{c.detectable:.{_digits(c)}f})"


def findings_section(page, findings: list[dict], paper_header: str, name=None, note=None, muted=None) -> None:
    """The report's findings table: claim, verdict, estimate [95 % interval] (± what this run can detect),
    this run's numbers, the paper's, and the rule; `name` and `note` (finding → text) adjust the claim and verdict
    cells, and `muted` (finding → bool) greys out a verdict that is no evidence."""
    rows, classes = [], []
    for d in findings:
        f = Finding.from_dict(d)
        extra = note(d) if note else ""
        rows.append([name(d) if name else f.claim, f.verdict + extra, f.summary, f.this_run, d["paper"], f.check.rule])
        classes.append(["", "na" if muted and muted(d) else VERDICT_CLASSES[f.verdict], "", "", "", ""])
    page.table(["finding", "verdict", "estimate [95 % interval] (± detectable)", "this run", paper_header, "rule"], rows, classes)
    parts = [(name(d) if name else d["claim"], p) for d in findings for p in (d.get("parts") or [d]) if p["ci"] is not None]
    if parts:
        labels = [f"{p['label']}: {label}" if p.get("label") else label for label, p in parts]  # the part first: labels are cut
        page.figure(interval_figure(labels, [p["estimate"] for _, p in parts], [tuple(p["ci"]) for _, p in parts],
                                    [p.get("threshold", 0.0) for _, p in parts], "estimate with its 95 % interval"),
                    "each compared quantity of the findings above (points, or as its rule says); the tick is the "
                    "threshold of its rule")
