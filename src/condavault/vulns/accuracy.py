"""Precision and recall of the links against a labelled set, by alias group (``condavault cve accuracy``).

A labelled set is JSON: ``{"files": [{"file": "channel/subdir/filename", "advisories": [ids], "set":
"name"}, ...], "goals": {"name": {"precision": 0.99, "recall": 0.98}}}``. For each file, the labelled
ids and the linked advisories are reduced to **alias groups** (an advisory and all its aliases are one
group, as the server merged them; an id the server does not know is a group of its own), then

* a true positive is a group both labelled and linked, a false positive one linked but not labelled,
  a false negative one labelled but not linked;
* precision = TP / (TP + FP), recall = TP / (TP + FN), per set and over every file (1.0 when the
  denominator is 0).

Only links that count are predictions by default (a link found through a bundled copy, or curated
``cleared`` / ``mitigated``, is not the package's own vulnerability).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from condavault.errors import InvalidRequest


@dataclass(frozen=True)
class Labelled:
    file: str  # channel/subdir/filename
    advisories: frozenset[str]
    set: str = "all"


@dataclass
class Score:
    files: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (kind "FP"/"FN", file, group)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def to_dict(self, examples: int = 20) -> dict[str, Any]:
        return {
            "files": self.files,
            "true_positives": self.tp,
            "false_positives": self.fp,
            "false_negatives": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "errors": [{"kind": k, "file": f, "advisory": g} for k, f, g in self.errors[:examples]],
        }


def parse_labels(doc: Any) -> tuple[list[Labelled], dict[str, dict[str, float]]]:
    """Validate a labelled set; raises :class:`InvalidRequest` saying what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise InvalidRequest('a labelled set is a JSON object with a "files" list', code="invalid_labels")
    out: list[Labelled] = []
    seen: set[str] = set()
    for i, item in enumerate(doc["files"]):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("file"), str)
            and item["file"].count("/") == 2
            and isinstance(item.get("advisories"), list)
            and all(isinstance(a, str) and a.strip() for a in item["advisories"])
        )
        if not ok:
            raise InvalidRequest(
                f'files[{i}]: expected {{"file": "channel/subdir/filename", "advisories": [ids]}}',
                code="invalid_labels",
            )
        if item["file"] in seen:
            raise InvalidRequest(f"files[{i}]: {item['file']} is labelled twice", code="invalid_labels")
        seen.add(item["file"])
        advisories = frozenset(a.strip().upper() for a in item["advisories"])
        out.append(Labelled(item["file"], advisories, str(item.get("set") or "all")))
    goals = doc.get("goals") or {}
    if not isinstance(goals, dict):
        raise InvalidRequest('"goals" is an object: {"set": {"precision": p, "recall": r}}', code="invalid_labels")
    return out, goals


def evaluate(
    labels: Iterable[Labelled],
    predicted: Mapping[str, Iterable[str]],
    group_of: Callable[[str], str],
) -> dict[str, Score]:
    """Scores per set and ``"all"``: ``predicted`` maps a file to its linked advisory ids, ``group_of``
    maps any id to its alias group."""
    scores: dict[str, Score] = {}
    overall = Score()
    for item in labels:
        truth = {group_of(a) for a in item.advisories}
        got = {group_of(a) for a in predicted.get(item.file, ())}
        for score in (scores.setdefault(item.set, Score()), overall):
            score.files += 1
            score.tp += len(truth & got)
            score.fp += len(got - truth)
            score.fn += len(truth - got)
            score.errors += [("FP", item.file, g) for g in sorted(got - truth)]
            score.errors += [("FN", item.file, g) for g in sorted(truth - got)]
    scores["all"] = overall
    return scores


def missed_goals(scores: Mapping[str, Score], goals: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Human-readable goals that were not met."""
    missed = []
    for name, goal in goals.items():
        score = scores.get(name)
        if score is None:
            continue
        for metric in ("precision", "recall"):
            want = goal.get(metric)
            if want is not None and getattr(score, metric) < float(want):
                missed.append(f"{name}: {metric} {getattr(score, metric):.4f} < {float(want):g}")
    return missed
