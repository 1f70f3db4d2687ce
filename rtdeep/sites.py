"""The one site and organ table: every structure's name, colour, coded meaning and plausible size.

Adding an organ is one entry in :data:`ORGANS`; adding a site is one entry in :data:`SITES`. The
phantom, the training code, the model bundles, the atlas, the Slicer worker and the panels read
from here, so a structure has one TG-263 name, one colour and one SNOMED CT code everywhere.

Coded meaning (as DICOM SEG's Segment Sequence and Slicer's terminology module expect): a
category, a type and, for paired organs, a laterality modifier, each a :class:`Code` of scheme
``SCT`` (SNOMED CT). Organs use category 123037004 "Anatomical Structure"; the targets use the
radiotherapy-target types of DICOM CID 9534 (GTV 228791009, PTV 228793007) under category
49755003 "Morphologically Altered Structure"; the body outline is 38266002 "Entire body".

Plausible ranges (adult CT, whole organ, as delineated for planning; order of magnitude from
published contouring and normal-anatomy series, deliberately wide so that a warning means
"look at this", not "outside one cohort's spread"):

============  ============  ===============  ==============================================
organ          volume (cc)   cross-section    basis
============  ============  ===============  ==============================================
Lung_L, _R     700-4000      -                total lung volume about 3-7 l at breath hold
Heart          300-1300      -                cardiac silhouette incl. pericardium
Esophagus      8-80          0.3-6 cm2        thoracic segment; collapsed to distended lumen
SpinalCord     5-80          0.3-2.0 cm2      contoured as the canal (cord alone 0.6-1 cm2)
Parotid_L, _R  8-60          -                mean about 25-30 cc per gland
Glnd_Submand   3-25          -                mean about 8-10 cc per gland
Mandible       30-140        -                bone volume of the whole mandible
Brainstem      12-45         -                midbrain to medulla, about 25-30 cc
============  ============  ===============  ==============================================

Cross-section ranges (cm2, axial) apply to tubular organs, whose volume depends on the scanned
length more than on the patient. The checks live in :mod:`rtdeep.plausibility`.

Example:
    >>> [organ.name for organ in SITES["thorax"].organs]
    ['Lung_L', 'Lung_R', 'Heart', 'Esophagus', 'SpinalCord']
    >>> ORGANS["Heart"].type_code.value
    '80891009'
"""

from __future__ import annotations

from dataclasses import dataclass

from rtdeep.errors import RtDeepError

__all__ = [
    "ANATOMICAL_STRUCTURE",
    "ORGANS",
    "SITES",
    "Code",
    "Organ",
    "Site",
    "get_organ",
    "get_site",
    "organ_for_label",
]


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM code sequence item): code value, coding scheme designator, meaning."""

    value: str
    meaning: str
    scheme: str = "SCT"

    def as_terminology_string(self) -> str:
        """Slicer's ``scheme^value^meaning`` form, used in segment terminology entries."""
        return f"{self.scheme}^{self.value}^{self.meaning}"


ANATOMICAL_STRUCTURE = Code("123037004", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("49755003", "Morphologically Altered Structure")
LEFT = Code("7771000", "Left")
RIGHT = Code("24028007", "Right")


@dataclass(frozen=True)
class Organ:
    """One structure: what it is called, how it is drawn and coded, and how big it can plausibly be.

    Attributes:
        name: TG-263 name (the ROI name written to RTSTRUCT and shown as the segment name).
        color_rgb: display colour, 0-255 per channel (RTSTRUCT ROI Display Color, segment colour).
        interpreted_type: RT ROI Interpreted Type (ORGAN, EXTERNAL, GTV, PTV ...).
        category_code: SNOMED CT segmentation category.
        type_code: SNOMED CT segmentation type; None for a structure the table does not know.
        laterality: SNOMED CT laterality modifier of a paired organ, else None.
        volume_cc: plausible whole-structure volume (low, high) in cc, or None (no check).
        cross_section_cm2: plausible axial cross-section (low, high) of a tubular organ in cm2.
        median_hu: plausible median HU (low, high) of the CT inside the contour, any contrast phase,
            or None (no check).
        dice_floor: the median held-out Dice a bundled model must reach for this organ (issue 9's
            floors, near the human inter-observer agreement in ../shared/ANCHORS.md), or None.
        compact: a bulky organ with no thin part of its own (lungs, heart): network output that
            leaves it as a thin strand is cut where the strand leaves the organ
            (:func:`rtdeep.inference.postprocess.trim_strands`). Tubes (esophagus, cord) and organs
            with thin parts (mandible, glands) are not compact.
    """

    name: str
    color_rgb: tuple[int, int, int]
    interpreted_type: str = "ORGAN"
    category_code: Code = ANATOMICAL_STRUCTURE
    type_code: Code | None = None
    laterality: Code | None = None
    volume_cc: tuple[float, float] | None = None
    cross_section_cm2: tuple[float, float] | None = None
    median_hu: tuple[float, float] | None = None
    dice_floor: float | None = None
    compact: bool = False


def _organ(name: str, color_rgb: tuple[int, int, int], type_value: str, type_meaning: str, **kwargs) -> Organ:
    return Organ(name, color_rgb, type_code=Code(type_value, type_meaning), **kwargs)


# Colours follow common planning-system conventions (lungs blue/cyan, heart red, cord yellow ...);
# every structure of a site has its own colour.
ORGANS: dict[str, Organ] = {
    organ.name: organ
    for organ in (
        _organ("External", (0, 190, 0), "38266002", "Entire body", interpreted_type="EXTERNAL"),
        # median HU: aerated lung is -950 to -700 HU (emphysema lower; fibrosis, dependent atelectasis
        # and small effusions included stay well below -500); blood and myocardium 35-60 HU unenhanced,
        # up to about 400 HU in the arterial phase (scanner table, docs/phantom.md)
        _organ("Lung_L", (0, 160, 255), "39607008", "Lung", laterality=LEFT, volume_cc=(700.0, 4000.0),
               median_hu=(-1024.0, -500.0), dice_floor=0.95, compact=True),
        _organ("Lung_R", (0, 220, 200), "39607008", "Lung", laterality=RIGHT, volume_cc=(700.0, 4000.0),
               median_hu=(-1024.0, -500.0), dice_floor=0.95, compact=True),
        _organ("Heart", (220, 30, 60), "80891009", "Heart", volume_cc=(300.0, 1300.0), median_hu=(-100.0, 500.0),
               dice_floor=0.9, compact=True),
        _organ("Esophagus", (255, 140, 0), "32849002", "Esophagus", volume_cc=(8.0, 80.0),
               cross_section_cm2=(0.3, 6.0), dice_floor=0.8),
        # clinical cord contours on CT follow the bony canal (RTOG thoracic atlas, Kong et al., IJROBP
        # 2011;81:1442): thecal sac about 1-1.7 cm2 (thoracic canal 14-17 mm wide, Panjabi et al., Spine 1991)
        _organ("SpinalCord", (255, 230, 0), "2748008", "Spinal cord", volume_cc=(5.0, 80.0),
               cross_section_cm2=(0.3, 2.0), dice_floor=0.85),
        _organ("Parotid_L", (0, 200, 120), "45289007", "Parotid gland", laterality=LEFT, volume_cc=(8.0, 60.0), dice_floor=0.85),
        _organ("Parotid_R", (120, 200, 0), "45289007", "Parotid gland", laterality=RIGHT, volume_cc=(8.0, 60.0), dice_floor=0.85),
        _organ("Glnd_Submand_L", (200, 0, 200), "54019009", "Submandibular gland", laterality=LEFT,
               volume_cc=(3.0, 25.0), dice_floor=0.8),
        _organ("Glnd_Submand_R", (140, 80, 255), "54019009", "Submandibular gland", laterality=RIGHT,
               volume_cc=(3.0, 25.0), dice_floor=0.8),
        _organ("Mandible", (230, 230, 180), "91609006", "Mandible", volume_cc=(30.0, 140.0), dice_floor=0.9),
        _organ("Brainstem", (255, 100, 100), "15926001", "Brainstem", volume_cc=(12.0, 45.0), dice_floor=0.85),
        _organ("GTV", (255, 0, 0), "228791009", "Gross tumor volume", interpreted_type="GTV",
               category_code=MORPHOLOGICALLY_ALTERED_STRUCTURE),
        _organ("PTV", (0, 255, 255), "228793007", "Planning target volume", interpreted_type="PTV",
               category_code=MORPHOLOGICALLY_ALTERED_STRUCTURE),
    )
}


@dataclass(frozen=True)
class Site:
    """A treatment site: the organs a model segments, the plan it gets, the grid models see.

    Attributes:
        name: short name used in model names (``thorax_unet3d``, ``thorax_atlas``) and on the CLI.
        title: human-readable title.
        organ_names: TG-263 names in label order (label value = position + 1, 0 is background).
        prescription_gy: prescribed dose to the PTV (Gy) of the phantom plans.
        fractions: number of fractions of the phantom plans.
        spacing_mm: model grid spacing along i, j, k (mm).
        intensity_window: HU mapped linearly to [0, 1] (clipped) before a network.
    """

    name: str
    title: str
    organ_names: tuple[str, ...]
    prescription_gy: float
    fractions: int
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 3.0)
    intensity_window: tuple[float, float] = (-1000.0, 1000.0)

    @property
    def organs(self) -> tuple[Organ, ...]:
        """The segmented organs in label order."""
        return tuple(ORGANS[name] for name in self.organ_names)

    @property
    def structures(self) -> tuple[Organ, ...]:
        """Everything a plan of this site delineates: External, the organs, GTV and PTV."""
        return (ORGANS["External"], *self.organs, ORGANS["GTV"], ORGANS["PTV"])

    @property
    def n_classes(self) -> int:
        """Output channels of a segmentation network: background plus one per organ."""
        return len(self.organ_names) + 1


SITES: dict[str, Site] = {
    site.name: site
    for site in (
        Site("thorax", "Thorax", ("Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord"),
             prescription_gy=60.0, fractions=30, intensity_window=(-1000.0, 600.0)),
        Site("headneck", "Head and neck",
             ("Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R", "Mandible", "Brainstem", "SpinalCord"),
             prescription_gy=70.0, fractions=35, intensity_window=(-300.0, 700.0)),
    )
}


def get_site(name: str) -> Site:
    """The site called ``name``; RtDeepError naming the known sites otherwise."""
    if name not in SITES:
        raise RtDeepError(f"unknown site '{name}'; expected one of {', '.join(SITES)}")
    return SITES[name]


def get_organ(name: str) -> Organ:
    """The organ called ``name`` (TG-263); RtDeepError naming the known organs otherwise."""
    if name not in ORGANS:
        raise RtDeepError(f"unknown organ '{name}'; expected one of {', '.join(ORGANS)}")
    return ORGANS[name]


def organ_for_label(name: str, color_rgb: tuple[int, int, int], interpreted_type: str = "ORGAN") -> Organ:
    """The table's organ for a model's label name, or an uncoded one for a name the table lacks.

    A user's own bundle may segment structures this table does not know: they keep the bundle's
    colour and type and get no SNOMED CT type code. A known name always takes the table's entry,
    so one organ has one colour whichever model drew it.
    """
    if name in ORGANS:
        return ORGANS[name]
    return Organ(name, (int(color_rgb[0]), int(color_rgb[1]), int(color_rgb[2])), interpreted_type)
