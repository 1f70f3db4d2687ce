"""Structure (ROI) name matching with TG-263 synonyms.

Clinics spell the same organ many ways: ``Lung_L`` (TG-263), ``Lung L``, ``L_Lung``, ``LUNG_LT``,
``Left Lung``. A requested name is matched against the names a structure set holds in this order,
and the first rule that finds something wins:

1. exact spelling;
2. the same spelling ignoring case;
3. the same *canonical key*: the name is split into words (at spaces, ``_``, ``-``, ``.`` and
   lower-to-upper case changes), laterality words (``l``, ``lt``, ``left``, ``r``, ``rt``, ``right``)
   become a side, organ words are mapped to one TG-263 root (``oesophagus`` -> ``esophagus``,
   ``body``/``outline``/``skin`` -> ``external``, ``both lungs``/``lung total`` -> ``lungs``, ...);
4. a pattern with ``*``, ``?`` or ``[`` is a case-insensitive shell pattern that may match several
   names (or none: used for optional exclusions such as ``GTV*``).

A name that matches nothing raises :class:`~rtdeep.errors.StructureError` listing the available
names; one that matches two names by key raises too (ambiguous), so nothing is guessed silently.
Every match records how it was made, so callers can say which name was used.

Example:
    >>> match_roi_name("Lung L", ["LUNG_LT", "LUNG_RT", "GTV"]).used
    'LUNG_LT'
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rtdeep.errors import StructureError

__all__ = ["NON_ORGAN_TYPES", "NameDecision", "NameMatch", "RoiPairing", "canonical_key", "classify_structure",
           "is_pattern", "match_roi_name", "pair_roi_names", "resolve_roi_names"]

_LEFT = {"l", "lt", "lft", "left", "sin", "sinister"}
_RIGHT = {"r", "rt", "rgt", "right", "dx", "dex", "dexter"}
_BOTH = {"total", "both", "bilat", "bilateral", "combined", "all"}

#: one word (or two joined) -> TG-263 root
_ROOT_SYNONYMS = {
    "lungs": "lungs",
    "lung": "lung",
    "oesophagus": "esophagus",
    "esophagus": "esophagus",
    "eso": "esophagus",
    "esoph": "esophagus",
    "oesoph": "esophagus",
    "spinalcord": "spinalcord",
    "cord": "spinalcord",
    "spinal": "spinal",
    "body": "external",
    "external": "external",
    "outline": "external",
    "skin": "external",
    "patient": "external",
    "ext": "external",
    "parotid": "parotid",
    "parotidgland": "parotid",
    "parotids": "parotids",
    "submandibular": "glnd_submand",
    "smg": "glnd_submand",
    "submand": "glnd_submand",
    "brainstem": "brainstem",
    "heart": "heart",
    "mandible": "mandible",
    "bonemandible": "mandible",
    "liver": "liver",
}
_DROP_WORDS = {"gland", "glnd", "structure", "roi"}


@dataclass(frozen=True)
class NameMatch:
    """How a requested ROI name was found.

    Attributes:
        requested: the name asked for.
        used: the name in the structure set that was used.
        how: ``"exact"``, ``"case"``, ``"synonym"`` (canonical key) or ``"pattern"``.
    """

    requested: str
    used: str
    how: str

    def describe(self) -> str:
        """One line for logs: ``Lung_L -> 'LUNG_LT' (TG-263 synonym)``."""
        label = {"exact": "exact", "case": "case-insensitive", "synonym": "TG-263 synonym",
                 "pattern": "pattern"}[self.how]
        return f"{self.requested} -> '{self.used}' ({label})"


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name.strip())
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def canonical_key(name: str) -> str:
    """Canonical key of an ROI name: TG-263 root plus side, e.g. ``"lung_L"`` for ``"L_Lung"``.

    Args:
        name: an ROI name as written in an RT Structure Set.

    Returns:
        ``root`` or ``root_L`` / ``root_R``; names that differ only in spelling get the same key.
    """
    words = _words(name)
    side = ""
    both = False
    roots: list[str] = []
    for word in words:
        if word in _LEFT:
            side = "L"
        elif word in _RIGHT:
            side = "R"
        elif word in _BOTH:
            both = True
        elif word not in _DROP_WORDS:
            roots.append(word)
    joined = "".join(roots)
    root = _ROOT_SYNONYMS.get(joined)
    if root is None:
        root = "".join(_ROOT_SYNONYMS.get(word, word) for word in roots)
    if root == "spinal":
        root = "spinalcord"
    if both and root in ("lung", "lungs"):
        return "lungs"
    if both and not side:
        return root
    return f"{root}_{side}" if side else root


def is_pattern(name: str) -> bool:
    """True when ``name`` is a shell pattern (contains ``*``, ``?`` or ``[``)."""
    return any(ch in name for ch in "*?[")


def _not_found(requested: str, available: Sequence[str], detail: str = "") -> StructureError:
    listing = ", ".join(f"'{n}'" for n in available) or "(none)"
    return StructureError(f"structure not found{detail}; available structures: {listing}", roi=requested)


def match_roi_name(requested: str, available: Iterable[str]) -> NameMatch:
    """Find one structure for ``requested`` among ``available`` (see the module rules 1-3).

    Args:
        requested: the name asked for (not a pattern).
        available: names present in the structure set.

    Returns:
        The match.

    Raises:
        StructureError: nothing matches (the message lists the available names) or the
            synonym rule finds more than one name.
    """
    names = list(available)
    how, candidates = _candidates(requested, names)
    if len(candidates) == 1:
        return NameMatch(requested, candidates[0], how)
    if candidates:
        listing = ", ".join(f"'{n}'" for n in candidates)
        raise StructureError(f"name is ambiguous: it matches {listing}; give the exact name", roi=requested)
    raise _not_found(requested, names)


def _candidates(requested: str, names: Sequence[str]) -> tuple[str, list[str]]:
    """(rule, names it finds) of the first of rules 1-3 that finds anything; ("", []) for none."""
    if requested in names:
        return "exact", [requested]
    folded = [n for n in names if n.casefold() == requested.casefold()]
    if len(folded) == 1:
        return "case", folded
    key = canonical_key(requested)
    by_key = [n for n in names if canonical_key(n) == key]
    if len(by_key) == 1:
        return "synonym", by_key
    return ("case", folded) if folded else ("synonym", by_key)


@dataclass(frozen=True)
class RoiPairing:
    """ROIs of a reference structure set paired with those of a test set (rules 1-3).

    Attributes:
        pairs: ``{reference name: test name}`` for every reference ROI with exactly one partner.
        ambiguous: ``{reference name: test names}`` where the rules found several partners; these
            are not paired (nothing is guessed) and :meth:`warnings` says so.
    """

    pairs: dict[str, str]
    ambiguous: dict[str, tuple[str, ...]]

    def warnings(self) -> list[str]:
        """One line per ambiguous reference ROI."""
        return [f"ROI '{name}' not compared: it matches {', '.join(repr(n) for n in found)} of the test set; "
                "rename one of them" for name, found in self.ambiguous.items()]


def pair_roi_names(reference_names: Iterable[str], test_names: Iterable[str]) -> RoiPairing:
    """Pair two structure sets' ROI names with the rules of :func:`match_roi_name`.

    Example:
        >>> pair_roi_names(["Lung_L", "Heart"], ["LUNG LT", "Heart", "HEART "]).pairs
        {'Lung_L': 'LUNG LT', 'Heart': 'Heart'}
    """
    tests = list(test_names)
    pairs: dict[str, str] = {}
    ambiguous: dict[str, tuple[str, ...]] = {}
    for name in reference_names:
        _how, candidates = _candidates(name, tests)
        if len(candidates) == 1:
            pairs[name] = candidates[0]
        elif candidates:
            ambiguous[name] = tuple(candidates)
    return RoiPairing(pairs, ambiguous)


def resolve_roi_names(requested: Sequence[str], available: Iterable[str]) -> list[NameMatch]:
    """Match every requested name; patterns may match several names or none.

    Args:
        requested: names or shell patterns.
        available: names present in the structure set.

    Returns:
        Matches in request order (a pattern contributes one match per name it covers; a name
        used twice appears once).

    Raises:
        StructureError: a plain name that matches nothing or is ambiguous.
    """
    names = list(available)
    matches: list[NameMatch] = []
    seen: set[str] = set()
    for name in requested:
        if is_pattern(name):
            found = [NameMatch(name, n, "pattern") for n in names
                     if fnmatch.fnmatchcase(n.casefold(), name.casefold())]
        else:
            found = [match_roi_name(name, names)]
        for match in found:
            if match.used not in seen:
                seen.add(match.used)
                matches.append(match)
    return matches


# ---------------------------------------------------------------------------------------------
# Whole-export name mapping: which organ (if any) a clinic's structure name stands for.
# Used by ``rtdeep cohort`` (roi_names.csv) and by training on a clinic's cohort.

#: RT ROI Interpreted Types that never hold an organ (markers, points, couch and support, bolus ...)
NON_ORGAN_TYPES = frozenset({
    "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "BOLUS", "SUPPORT", "FIXATION", "CONTROL",
    "DOSE_REGION", "CAVITY", "POINT", "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD",
    "TREATED_VOLUME", "IRRAD_VOLUME",
})
_TARGET_TYPES = frozenset({"GTV", "CTV", "PTV", "ITV"})
_TARGET_WORD = re.compile(r"^(i?gtv|ctv|ptv|itv|tumou?r|boost)\w*$")
_PRV_WORD = re.compile(r"^(prv|pr)\d*(mm)?$|^prv")
_RING_WORD = re.compile(r"^ring\w*$|^\w*ring$")
_OPTIMISATION_WORD = re.compile(r"^(opt\w*|avoid\w*|avd|dummy|help(er)?|tmp|temp|ctrl|nt|block\w*|ptvopt|zz?)$")
_COUCH_WORD = re.compile(r"^(couch\w*|table|tabletop|support|board|headrest|immob\w*|fixation|mask|bolus|vaclok)$")
_MARKER_WORD = re.compile(r"^(marker\w*|fiducial\w*|bb|point\w*|pt|poi|ref|iso|isoc\w*|seed\w*|clip\w*|"
                          r"tattoo\w*|laser\w*|origin|mark\w*|dosemax|dmax|calc\w*)$")
_DENSITY_WORD = re.compile(r"^(override|artifact|artefact|contrast|density|hu\d*)$")
_DERIVED_WORD = re.compile(r"^(minus|not|and|or|sub|excl|exclude|without|overlap|union|crop)$")
_ORGAN_ROOTS = frozenset(_ROOT_SYNONYMS.values()) | {"mandible", "lungs"}


@dataclass(frozen=True)
class NameDecision:
    """What one structure name in a clinic's export stands for.

    Attributes:
        name: the ROI name as written.
        organ: the TG-263 organ name it maps to, or None (excluded).
        rule: the rule that decided, e.g. ``"synonym"``, ``"excluded: PRV"``, ``"user map"``.
    """

    name: str
    organ: str | None
    rule: str


def _exclusion_rule(name: str, interpreted_type: str) -> str | None:
    """Why ``name`` can never be an organ (PRV, ring, optimisation, derived, couch, marker ...)."""
    kind = (interpreted_type or "").strip().upper()
    if kind in NON_ORGAN_TYPES:
        return f"excluded: interpreted type {kind}"
    lowered = name.strip().lower()
    words = _words(name)
    if re.match(r"^z[_\-. ]|^zz|^_", lowered):
        return "excluded: optimisation (z_ prefix)"
    if any(_PRV_WORD.match(w) for w in words) or "prv" in lowered:
        return "excluded: PRV"
    if any(_RING_WORD.match(w) for w in words):
        return "excluded: ring"
    if any(_OPTIMISATION_WORD.match(w) for w in words):
        return "excluded: optimisation"
    if any(_COUCH_WORD.match(w) for w in words):
        return "excluded: couch or immobilisation"
    if any(_MARKER_WORD.match(w) for w in words):
        return "excluded: marker or point"
    if any(_DENSITY_WORD.match(w) for w in words):
        return "excluded: density override"
    has_target = any(_TARGET_WORD.match(w) for w in words)
    has_organ = any(_ROOT_SYNONYMS.get(w, w) in _ORGAN_ROOTS for w in words)
    boolean = bool(re.search(r"\w\s*[-+&|^]\s*[A-Za-z]", name)) and has_target
    if (has_target and has_organ) or boolean or any(_DERIVED_WORD.match(w) for w in words) or re.search(
            r"[+]\s*\d|\d\s*mm\b|exp\w*\d", lowered):
        return "excluded: derived (boolean or margin)"
    if has_target or kind in _TARGET_TYPES:
        return "excluded: target volume"
    return None


def classify_structure(name: str, organs: Sequence[str], interpreted_type: str = "") -> NameDecision:
    """Map one structure name of a clinic's export to one of ``organs`` (TG-263 names) or exclude it.

    Exclusions come first, so a PRV, ring, optimisation (``opt``, ``z_``, ``avoid``), derived
    (``Lungs-GTV``, ``Lung-CTV``, ``Cord+5mm``), couch, marker or point structure (also by its RT ROI
    Interpreted Type, e.g. MARKER, SUPPORT) is never taken for the organ it was drawn from. Then the
    matcher's rules: exact, case-insensitive, TG-263 synonym key (laterality words, abbreviations,
    separators).

    Args:
        name: the ROI name as written.
        organs: the TG-263 organ names that may be matched (a site's organs).
        interpreted_type: the ROI's RT ROI Interpreted Type, if known.

    Returns:
        The decision (``organ`` None when excluded or unmatched).

    Example:
        >>> classify_structure("Lt Lung", ["Lung_L", "Lung_R"]).organ
        'Lung_L'
        >>> classify_structure("SpinalCord_PRV05", ["SpinalCord"]).rule
        'excluded: PRV'
    """
    reason = _exclusion_rule(name, interpreted_type)
    if reason is not None:
        return NameDecision(name, None, reason)
    if name in organs:
        return NameDecision(name, name, "exact")
    folded = [organ for organ in organs if organ.casefold() == name.strip().casefold()]
    if folded:
        return NameDecision(name, folded[0], "case")
    key = canonical_key(name)
    by_key = [organ for organ in organs if canonical_key(organ) == key]
    if len(by_key) == 1:
        return NameDecision(name, by_key[0], "synonym")
    return NameDecision(name, None, "excluded: no organ of the site matches")
