"""Map every structure name of an export to a site organ (TG-263) or ``excluded``, with the rule.

The rules are :func:`rtdeep.names.classify_structure`'s; a user's ``--names`` CSV (columns
``name`` and ``tg263``, the latter an organ of the site or ``excluded``) overrides any of them.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtdeep.cohort.manifest import write_rows_csv
from rtdeep.errors import ValidationError
from rtdeep.names import NameDecision, classify_structure

__all__ = ["EXCLUDED", "NameTable", "read_names_map"]

#: the ``tg263`` value of a structure that is not used as an organ
EXCLUDED = "excluded"
_RULE_PRIORITY = {"user map": 0, "exact": 1, "case": 2, "synonym": 3}


def read_names_map(path: str | os.PathLike[str], organs: Sequence[str]) -> dict[str, str | None]:
    """Read a user's name map: ``name,tg263`` per line (``tg263`` an organ name or ``excluded``).

    Raises:
        ValidationError: missing columns, or a target that is neither an organ of the site nor
            ``excluded`` (naming the file and line).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "tg263"} - set(reader.fieldnames or [])
        if missing:
            raise ValidationError(f"name map lacks column(s) {', '.join(sorted(missing))} (expected name,tg263)",
                                  path=path)
        mapping: dict[str, str | None] = {}
        for line, row in enumerate(reader, start=2):
            name, target = (row["name"] or "").strip(), (row["tg263"] or "").strip()
            if not name:
                continue
            if target.lower() == EXCLUDED:
                mapping[name] = None
            elif target in organs:
                mapping[name] = target
            else:
                raise ValidationError(f"line {line}: '{target}' for '{name}' is not an organ of the site "
                                      f"({', '.join(organs)}) nor '{EXCLUDED}'", path=path)
    return mapping


@dataclass
class NameTable:
    """Decisions for every (name, interpreted type) seen, and in how many studies each appeared.

    Args:
        organs: the site's organ names (TG-263).
        user_map: name -> organ or None (excluded), from :func:`read_names_map`.
    """

    organs: Sequence[str]
    user_map: Mapping[str, str | None] = field(default_factory=dict)
    _decisions: dict[tuple[str, str], NameDecision] = field(default_factory=dict)
    _studies: Counter = field(default_factory=Counter)

    def decide(self, name: str, interpreted_type: str = "") -> NameDecision:
        """The decision for one structure (the user's map first, then the rules)."""
        key = (name, interpreted_type)
        if key not in self._decisions:
            if name in self.user_map:
                self._decisions[key] = NameDecision(name, self.user_map[name], "user map")
            else:
                self._decisions[key] = classify_structure(name, self.organs, interpreted_type)
        return self._decisions[key]

    def map_study(self, rois: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
        """Map one structure set's ``(name, interpreted type)`` list to organs and count it.

        Returns:
            ``(organ -> ROI name, warnings)``; when several names map to one organ the strongest
            rule wins (user map, exact, case, synonym; then file order) and a warning says so.
        """
        by_organ: dict[str, list[NameDecision]] = {}
        for name, kind in dict.fromkeys(rois):
            decision = self.decide(name, kind)
            self._studies[(decision.name, decision.organ, decision.rule)] += 1
            if decision.organ is not None:
                by_organ.setdefault(decision.organ, []).append(decision)
        mapping, warnings = {}, []
        for organ in self.organs:
            candidates = sorted(by_organ.get(organ, []), key=lambda d: _RULE_PRIORITY.get(d.rule, 9))
            if not candidates:
                continue
            mapping[organ] = candidates[0].name
            if len(candidates) > 1:
                others = ", ".join(f"'{d.name}'" for d in candidates[1:])
                warnings.append(f"{organ}: several structures match; using '{candidates[0].name}' (not {others})")
        return mapping, warnings

    def rows(self) -> list[dict[str, str]]:
        """One row per distinct (name, decision): name, tg263 (organ or ``excluded``), rule, studies."""
        rows = [{"name": name, "tg263": organ or EXCLUDED, "rule": rule, "studies": str(count)}
                for (name, organ, rule), count in self._studies.items()]
        return sorted(rows, key=lambda row: (row["tg263"] == EXCLUDED, row["tg263"], row["name"].casefold()))

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``roi_names.csv`` (refuses to overwrite)."""
        return write_rows_csv(path, ["name", "tg263", "rule", "studies"], self.rows())

