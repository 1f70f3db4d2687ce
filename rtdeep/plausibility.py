"""Plausibility checks of organ contours on any CT, without a reference.

An AI contour can be wrong in ways a user sees at a glance and a Dice score never will: a cord
missing on half of its slices, a heart behind the spine, lungs labelled the wrong way round, an
organ five times too big. :func:`check_plausibility` looks for such errors and returns one
:class:`Finding` per failed check; ``rtdeep segment`` prints each as a warning (the organ stays in
the RTSTRUCT) and lists them with ``--json``.

Checks (ranges from the organ table :mod:`rtdeep.sites`, deliberately wide):

* ``empty``: the organ has no voxel.
* ``volume``: the organ's volume is outside ``Organ.volume_cc``.
* ``coverage``: an organ that ends inside a scan of its site (not a tube such as the cord) is cut by
  the CT's first or last slice: that slice holds :data:`CUT_SHARE` or more of its largest
  cross-section. The scan then misses part of it, so its volume and any dose-volume figure of it
  (a lung's mean dose, V20) are wrong; a planning CT should cover the whole organ.
* ``continuity``: a tubular organ (one with ``Organ.cross_section_cm2``: esophagus, spinal cord)
  is missing on slices inside its own extent; the spinal cord is also missing on more than 10 % of
  the slices between the lung apex and base (it runs through the whole chest).
* ``cross_section``: the median axial cross-section of a tubular organ is outside its range.
* ``density``: the median HU inside the contour is outside ``Organ.median_hu``: a lung contour
  whose median voxel is soft tissue (liver, heart or bowel labelled lung), a heart contour that is
  mostly lung.
* ``position``: the heart's centre is not between the lungs (left-right) or not anterior to the
  spinal cord, or reaches more than :data:`HEART_BELOW_LUNGS_MM` below the lowest lung voxel (the
  heart rests on the diaphragm, above the costophrenic recesses; below them lies the liver, which
  a network may take for heart on a scan that goes on into the abdomen); the esophagus reaches more
  than :data:`ESOPHAGUS_BELOW_LUNGS_MM` below the lowest lung voxel (it ends in the stomach at
  about T11, above the posterior costophrenic recesses; a contour that runs on has followed the
  aorta, a crus or the stomach); the spinal cord is not
  posterior to bone (the vertebral body) on at least half of its slices, or lies in bone; the
  mandible is not anterior to the cord; the brainstem is not above the cord's centre.
* ``laterality``: an organ named left (``_L``) lies to the right of its right-hand twin, or on the
  patient's right of the body midline (LPS: +x is the patient's left).

Example:
    >>> findings = check_plausibility(ct, rois)          # doctest: +SKIP
    >>> [f.message for f in findings]                      # doctest: +SKIP
    ['Heart: centre 48 mm posterior to the SpinalCord centre (expected anterior)']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.sites import ORGANS
from rtdeep.volume import Volume

__all__ = ["CUT_SHARE", "ESOPHAGUS_BELOW_LUNGS_MM", "HEART_BELOW_LUNGS_MM", "Finding", "check_plausibility",
           "scan_cut"]

#: HU above which a voxel counts as bone for the canal check (cortical and most cancellous bone)
BONE_HU = 150.0
#: median HU above which a cord contour lies in bone (vertebral body), not in the canal: CSF and cord
#: are about 0-40 HU; trabecular bone of the vertebral body is about 100-300 HU, osteoporotic about
#: 100 HU and below (Pickhardt et al., Ann Intern Med 2013;158:588), so the margin is thin
CORD_IN_BONE_HU = 70.0
#: how far in front of the cord centre (mm) the vertebral body is looked for
VERTEBRA_SEARCH_MM = (4.0, 45.0)
#: share of an organ's largest axial cross-section on the CT's first or last slice from which the scan
#: cuts the organ. The tip of a lung's base or apex that a scan just reaches is far below it (under
#: 2 % on the held-out thorax phantoms); a scan that stops through the lung bases is far above it.
CUT_SHARE = 0.10
#: how far (mm) the heart's lowest voxel may lie below the lungs' lowest voxel: the heart sits on the
#: central tendon of the diaphragm, the posterior costophrenic recesses reach several cm lower
HEART_BELOW_LUNGS_MM = 10.0
#: how far (mm) the esophagus's lowest voxel may lie below the lungs' lowest voxel: the
#: gastro-oesophageal junction lies at about T11 and the posterior costophrenic recesses reach T12
#: or L1 (Gray's Anatomy, 42nd ed.), so the esophagus normally ends above the lowest lung voxel (0-30 mm
#: above it on the 12 held-out and selection thorax phantoms); 30 mm leaves room for a shallow recess
ESOPHAGUS_BELOW_LUNGS_MM = 30.0
#: organs that end above the lung bases: how far (mm) below the lowest lung voxel each may reach, and
#: what a contour that reaches further has most likely taken for it
_ABOVE_LUNG_BASES = {"Heart": (HEART_BELOW_LUNGS_MM, "liver labelled heart?"),
                     "Esophagus": (ESOPHAGUS_BELOW_LUNGS_MM, "aorta, crus or stomach labelled esophagus?")}


@dataclass(frozen=True)
class Finding:
    """One failed check.

    Attributes:
        organ: the ROI name.
        check: ``empty``, ``volume``, ``coverage``, ``density``, ``continuity``, ``cross_section``,
            ``position`` or ``laterality``.
        message: one line for a user, naming the organ, the value and what was expected.
        value: the measured value (cc, cm2, mm, fraction), when there is one.
        expected: the plausible range, when there is one.
    """

    organ: str
    check: str
    message: str
    value: float | None = None
    expected: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _centroid_lps(ct: Volume, mask: np.ndarray) -> np.ndarray:
    """The centre of ``mask`` in LPS mm, from its per-slice, per-row and per-column voxel counts
    (no index arrays: a CT-grid mask has tens of millions of voxels)."""
    per_slice = np.count_nonzero(mask, axis=(1, 2))
    k_box = np.nonzero(per_slice)[0]
    mask = mask[k_box[0] : k_box[-1] + 1]
    counts = (per_slice[k_box[0] : k_box[-1] + 1], np.count_nonzero(mask, axis=(0, 2)),
              np.count_nonzero(mask, axis=(0, 1)))
    k_mean, j_mean, i_mean = (float(np.dot(np.arange(c.size), c)) / float(c.sum()) for c in counts)
    return ct.index_to_lps(np.array([i_mean, j_mean, k_mean + k_box[0]]))


def _slice_extent(mask: np.ndarray) -> np.ndarray:
    """Indices of the axial slices (array axis 0) that hold any voxel of ``mask``."""
    return np.nonzero(mask.any(axis=(1, 2)))[0]


def _axial_direction_sign(ct: Volume) -> tuple[float, float]:
    """LPS x and y change per step of the array's i and j axes (sign only; axial CTs)."""
    direction = np.asarray(ct.direction, float)
    return float(np.sign(direction[0, 0]) or 1.0), float(np.sign(direction[1, 1]) or 1.0)


def _outside(value: float, low: float, high: float, decimals: int) -> str:
    """``value`` with as many decimals as it takes (from ``decimals``, at most 3) to read outside
    ``low``-``high``: 299.6 cc must not read "300 cc" against a 300 cc limit."""
    for places in range(decimals, 4):
        shown = f"{value:.{places}f}"
        if not low <= float(shown) <= high:
            return shown
    return shown


def _volume_checks(ct: Volume, name: str, mask: np.ndarray) -> list[Finding]:
    organ = ORGANS.get(name)
    if organ is None or organ.volume_cc is None:
        return []
    volume = float(mask.sum()) * ct.voxel_volume_cc
    low, high = organ.volume_cc
    if low <= volume <= high:
        return []
    shown = _outside(volume, low, high, 0 if volume >= 100 else 1)
    return [Finding(name, "volume", f"{name}: volume {shown} cc outside the plausible {low:g}-{high:g} cc",
                    round(volume, 1), (low, high))]


def scan_cut(ct: Volume, slice_areas: np.ndarray) -> tuple[str, float] | None:
    """Whether the CT's first or last slice cuts an organ, from its voxel count on each slice of
    ``ct``: (``"superior edge"``, ``"inferior edge"`` or ``"superior and inferior edges"``, the largest
    share of its largest cross-section on a cutting edge slice), or None when no edge slice holds
    :data:`CUT_SHARE` of it (or the organ is empty)."""
    areas = np.asarray(slice_areas, float)
    if areas.max(initial=0.0) <= 0:
        return None
    last, shares = len(areas) - 1, areas / areas.max()
    cut = {index: shares[index] for index in {0, last} if shares[index] >= CUT_SHARE}
    if not cut:
        return None
    if len(cut) == 2 or last == 0:
        return "superior and inferior edges", float(max(cut.values()))
    first_is_superior = ct.index_to_lps(np.array([0.0, 0.0, 0.0]))[2] > ct.index_to_lps(np.array([0.0, 0.0, last]))[2]
    (index, share), = cut.items()
    return ("superior edge" if (index == 0) == first_is_superior else "inferior edge"), float(share)


def _density_checks(ct: Volume, name: str, mask: np.ndarray) -> list[Finding]:
    organ = ORGANS.get(name)
    if organ is None or organ.median_hu is None:
        return []
    median = float(np.median(ct.array[mask]))
    low, high = organ.median_hu
    if low <= median <= high:
        return []
    return [Finding(name, "density", f"{name}: median {median:.0f} HU inside the contour, outside the plausible "
                    f"{low:g} to {high:g} HU (another tissue labelled {name}?)", round(median, 1), (low, high))]


def _coverage_checks(ct: Volume, name: str, mask: np.ndarray) -> list[Finding]:
    organ = ORGANS.get(name)
    if organ is None or organ.volume_cc is None or organ.cross_section_cm2 is not None:
        return []  # tubes (cord, esophagus) run through every scan of their site
    cut = scan_cut(ct, np.count_nonzero(mask, axis=(1, 2)))
    if cut is None:
        return []
    edges, share = cut
    return [Finding(name, "coverage", f"{name}: cut by the CT's {edges} ({100 * share:.0f} % of its largest "
                    "cross-section on the edge slice): the scan misses part of it, so its volume and any "
                    "dose-volume figure of it are too low", round(share, 3), (0.0, CUT_SHARE))]


def _tube_checks(ct: Volume, name: str, mask: np.ndarray, lungs: np.ndarray | None) -> list[Finding]:
    organ = ORGANS.get(name)
    if organ is None or organ.cross_section_cm2 is None:
        return []
    findings = []
    slices = _slice_extent(mask)
    span = int(slices[-1] - slices[0] + 1)
    missing = span - len(slices)
    if missing > 0:
        findings.append(Finding(name, "continuity",
                                f"{name}: missing on {missing} of the {span} slices of its own extent",
                                float(missing), (0.0, 0.0)))
    if name == "SpinalCord" and lungs is not None and lungs.any():
        lung_slices = _slice_extent(lungs)
        chest = np.arange(lung_slices[0], lung_slices[-1] + 1)
        covered = float(np.isin(chest, slices).mean())
        if covered < 0.9:
            findings.append(Finding(name, "continuity",
                                    f"{name}: present on {100 * covered:.0f} % of the slices between lung apex and "
                                    "base (expected >= 90 %)", round(covered, 3), (0.9, 1.0)))
    pixel_cm2 = float(ct.spacing_mm[0] * ct.spacing_mm[1]) / 100.0
    areas = mask[slices].sum(axis=(1, 2)) * pixel_cm2
    median = float(np.median(areas))
    low, high = organ.cross_section_cm2
    if not low <= median <= high:
        findings.append(Finding(name, "cross_section",
                                f"{name}: median cross-section {median:.2f} cm2 outside the plausible {low:g}-{high:g} cm2",
                                round(median, 3), (low, high)))
    return findings


def _cord_in_canal(ct: Volume, cord: np.ndarray) -> list[Finding]:
    """Bone in front of the cord (vertebral body) on at least half of its slices, and the cord not in bone."""
    hu = ct.array
    _, sign_y = _axial_direction_sign(ct)
    near, far = (round(d / ct.spacing_mm[1]) for d in VERTEBRA_SEARCH_MM)
    slices = _slice_extent(cord)
    with_bone = 0
    for k in slices:
        jj, ii = np.nonzero(cord[k])
        j, i = round(jj.mean()), round(ii.mean())
        # anterior is -y in LPS: towards smaller j when j runs posterior
        step = -1 if sign_y > 0 else 1
        js = j + step * np.arange(max(near, 1), max(far, near + 1) + 1)
        js = js[(js >= 0) & (js < hu.shape[1])]
        columns = hu[k, js][:, max(i - 1, 0):i + 2]
        with_bone += bool(columns.size) and float(columns.max()) > BONE_HU
    findings = []
    fraction = with_bone / max(len(slices), 1)
    if fraction < 0.5:
        findings.append(Finding("SpinalCord", "position",
                                f"SpinalCord: bone (vertebral body) in front of it on only {100 * fraction:.0f} % of its "
                                "slices (expected the canal, behind the vertebral bodies)", round(fraction, 3), (0.5, 1.0)))
    median_hu = float(np.median(hu[cord]))
    if median_hu > CORD_IN_BONE_HU:
        findings.append(Finding("SpinalCord", "position",
                                f"SpinalCord: median {median_hu:.0f} HU, it lies in bone rather than in the canal",
                                round(median_hu, 1), (-100.0, CORD_IN_BONE_HU)))
    return findings


def _laterality(ct: Volume, masks: dict[str, np.ndarray], midline_x: float | None) -> list[Finding]:
    findings = []
    for left_name, left_mask in masks.items():
        if not left_name.endswith("_L"):
            continue
        right_name = left_name[:-2] + "_R"
        x_left = float(_centroid_lps(ct, left_mask)[0])
        if right_name in masks:
            x_right = float(_centroid_lps(ct, masks[right_name])[0])
            if x_left <= x_right:
                findings.append(Finding(left_name, "laterality",
                                        f"{left_name} lies {x_right - x_left:.0f} mm to the patient's right of "
                                        f"{right_name} (left and right swapped?)", round(x_left - x_right, 1)))
                continue
        if midline_x is not None and x_left < midline_x:
            findings.append(Finding(left_name, "laterality",
                                    f"{left_name}: centre {midline_x - x_left:.0f} mm right of the midline",
                                    round(x_left - midline_x, 1)))
    for right_name, right_mask in masks.items():
        if right_name.endswith("_R") and midline_x is not None and right_name[:-2] + "_L" not in masks:
            x_right = float(_centroid_lps(ct, right_mask)[0])
            if x_right > midline_x:
                findings.append(Finding(right_name, "laterality",
                                        f"{right_name}: centre {x_right - midline_x:.0f} mm left of the midline",
                                        round(x_right - midline_x, 1)))
    return findings


def _positions(ct: Volume, masks: dict[str, np.ndarray], lungs: np.ndarray | None) -> list[Finding]:
    findings = []
    centre = {name: _centroid_lps(ct, mask) for name, mask in masks.items()}
    if "Heart" in centre and "Lung_L" in centre and "Lung_R" in centre:
        x = centre["Heart"][0]
        if not centre["Lung_R"][0] < x < centre["Lung_L"][0]:
            findings.append(Finding("Heart", "position", "Heart: centre not between the lungs (left-right)",
                                    round(float(x), 1)))
    if "Heart" in centre and "SpinalCord" in centre:
        dy = float(centre["Heart"][1] - centre["SpinalCord"][1])  # LPS: +y posterior
        if dy >= 0:
            findings.append(Finding("Heart", "position",
                                    f"Heart: centre {dy:.0f} mm posterior to the SpinalCord centre (expected anterior)",
                                    round(dy, 1)))
    if "Mandible" in centre and "SpinalCord" in centre and centre["Mandible"][1] >= centre["SpinalCord"][1]:
        findings.append(Finding("Mandible", "position", "Mandible: centre not anterior to the SpinalCord",
                                round(float(centre["Mandible"][1] - centre["SpinalCord"][1]), 1)))
    if "Brainstem" in centre and "SpinalCord" in centre and centre["Brainstem"][2] <= centre["SpinalCord"][2]:
        findings.append(Finding("Brainstem", "position", "Brainstem: centre not above the SpinalCord centre",
                                round(float(centre["Brainstem"][2] - centre["SpinalCord"][2]), 1)))
    if lungs is not None:
        lowest_lung = _slice_extent(lungs)[0]  # axis 0 of the lps_ordered arrays runs from inferior to superior
        for name, (limit_mm, hint) in _ABOVE_LUNG_BASES.items():
            if name not in masks:
                continue
            below_mm = float(lowest_lung - _slice_extent(masks[name])[0]) * float(ct.spacing_mm[2])
            if below_mm > limit_mm:
                findings.append(Finding(name, "position", f"{name}: reaches {below_mm:.0f} mm below the lowest lung "
                                        f"voxel (expected above the lung bases: {hint})", round(below_mm, 1)))
    if "SpinalCord" in masks:
        findings += _cord_in_canal(ct, masks["SpinalCord"])
    return findings


def check_plausibility(ct: Volume, rois: Sequence[Roi]) -> list[Finding]:
    """Run every check on the organ ROIs (those the organ table knows; External, GTV, PTV skipped).

    Args:
        ct: the CT the contours were drawn on (HU; used by the canal check and for geometry).
        rois: contours on the CT grid.

    Returns:
        The failed checks, in ROI order (empty organs first, then volume, coverage, density,
        continuity, cross-section, position and laterality). An empty list means every check passed.
    """
    organs = [roi for roi in rois if roi.name in ORGANS and ORGANS[roi.name].interpreted_type == "ORGAN"]
    findings: list[Finding] = []
    masks: dict[str, np.ndarray] = {}
    for roi in organs:
        mask = np.asarray(roi.mask, bool)
        if not mask.any():
            findings.append(Finding(roi.name, "empty", f"{roi.name}: not found on this CT (empty contour)"))
            continue
        masks[roi.name] = ct.with_array(mask).lps_ordered().array  # axial slices first, as the CT's below
    ct = ct.lps_ordered()  # a sagittal or coronal series too: array axis 0 runs along the patient's length
    lungs = None
    if "Lung_L" in masks or "Lung_R" in masks:
        lungs = np.zeros(ct.shape, bool)
        for name in ("Lung_L", "Lung_R"):
            if name in masks:
                lungs |= masks[name]
    for name, mask in masks.items():
        findings += _volume_checks(ct, name, mask)
        findings += _coverage_checks(ct, name, mask)
        findings += _density_checks(ct, name, mask)
        findings += _tube_checks(ct, name, mask, lungs)
    findings += _positions(ct, masks, lungs)
    midline = None
    if "SpinalCord" in masks:
        midline = float(_centroid_lps(ct, masks["SpinalCord"])[0])
    findings += _laterality(ct, masks, midline)
    return findings
