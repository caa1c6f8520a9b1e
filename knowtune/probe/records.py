"""`ProbeRecord`: one probed question as the stages after the probe read it (curate, evaluate, train,
the studies). On disk it is one JSON object per line of probe.jsonl, keys in the order below."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
KNOWN = CATEGORIES[:3]


@dataclass(frozen=True)
class ProbeRecord:
    """A question (its dataset fields), the probe's evidence per exemplar set, P(T=0), P(T>0) and the
    SliCK category; `label` is a curated relabel of the answer (e.g. "I don't know"), absent otherwise.
    Keys a record holds beyond these (from another tool) are kept in `extra` and written back after them."""

    id: str
    relation: str
    subject: str | None = None
    question: str = ""
    answers: tuple[str, ...] = ()
    popularity: float | None = None
    split: str | None = None
    greedy: list[str] | None = None  # the greedy answer under each exemplar set
    greedy_correct: list[bool] | None = None
    sample_correct: list[int] | None = None  # correct samples under each exemplar set
    samples: list[dict[str, int]] | None = None  # answer → count, under each exemplar set
    p_greedy: float | None = None  # P(T=0)
    p_sample: float | None = None  # P(T>0)
    category: str = "Unknown"
    label: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def known(self) -> bool:
        """HighlyKnown, MaybeKnown or WeaklyKnown."""
        return self.category in KNOWN

    def relabelled(self, label: str) -> ProbeRecord:
        """The same record trained on `label` instead of its gold answer."""
        return replace(self, label=label)

    def to_dict(self) -> dict:
        """The JSON object of probe.jsonl (and of a curated set's rows)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("label", "extra")}
        d["answers"] = list(self.answers)
        if self.label is not None:
            d["label"] = self.label
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> ProbeRecord:
        """A record from its JSON object (checked first by data.validate.require_probe_record)."""
        names = {f.name for f in fields(cls)} - {"extra", "answers"}
        return cls(answers=tuple(d["answers"]), **{k: d.get(k) for k in names if k in d},
                   extra={k: v for k, v in d.items() if k not in names and k != "answers"})
