"""Normal-tissue complication probability (NTCP) from a DVH: gEUD, Lyman-Kutcher-Burman, and
the QUANTEC logistic mean-lung-dose model.

Published parameters are fitted to doses in 2 Gy fractions. When a plan's fractionation differs,
pass ``n_fractions`` (and the tissue's alpha/beta) and every dose bin is converted to EQD2 first:
``EQD2 = D (d + a/b) / (2 + a/b)`` with ``d = D / n_fractions`` the dose per fraction of that bin.

Doses in Gy; probabilities in [0, 1].

:func:`lung_dose_report` is the one place the normal lung (Lung_L + Lung_R - GTV*, the ``lung``
crop preset), its DVH, MLD / V5 / V20 and the pneumonitis NTCP are computed; ``rtdeep dvh``,
``rtdeep predict-pneumonitis``, training and the Slicer module all read a :class:`LungDoseReport`.

Example:
    >>> round(logistic_mld_ntcp(20.0), 3)   # QUANTEC: about 20 % at a mean lung dose of 20 Gy
    0.206
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rtdeep.dvh import DVH, dvh_from_samples, sample_on_grid
from rtdeep.errors import DoseError
from rtdeep.plausibility import scan_cut

if TYPE_CHECKING:
    from rtdeep.dicomrt.types import StructureSet
    from rtdeep.volume import Volume

__all__ = [
    "LKB_PARAMETERS",
    "NORMAL_LUNG_NAME",
    "QUANTEC_MLD_LOGISTIC",
    "LkbParameters",
    "LungDoseReport",
    "eqd2_gy",
    "geud_from_dvh",
    "geud_gy",
    "lkb_ntcp",
    "lkb_ntcp_from_dvh",
    "logistic_mld_ntcp",
    "lung_dose_report",
    "ntcp_report",
]


@dataclass(frozen=True)
class LkbParameters:
    """One Lyman-Kutcher-Burman parameter set.

    Attributes:
        td50_gy: uniform dose giving 50 % complication probability (EQD2, Gy).
        m: slope (standard deviation of the probit, relative to TD50).
        n: volume effect; gEUD uses ``a = 1 / n`` (n = 1: mean dose).
        alpha_beta_gy: alpha/beta of the tissue for EQD2 conversion.
        organ, endpoint, source: what it predicts and where it comes from.
    """

    td50_gy: float
    m: float
    n: float
    alpha_beta_gy: float
    organ: str
    endpoint: str
    source: str


#: Named LKB parameter sets.
LKB_PARAMETERS: dict[str, LkbParameters] = {
    "pneumonitis-quantec": LkbParameters(
        31.4, 0.45, 1.0, 3.0, "Lungs minus GTV", "symptomatic radiation pneumonitis",
        "QUANTEC lung (Marks et al. 2010), pooled fit of Semenenko & Li 2008",
    ),
    "pneumonitis-seppenwoolde": LkbParameters(
        30.8, 0.37, 0.99, 3.0, "Lungs minus GTV", "radiation pneumonitis grade >= 2",
        "Seppenwoolde et al. 2003, quoted by QUANTEC lung (Marks et al. 2010)",
    ),
    "xerostomia-parotid": LkbParameters(
        39.9, 0.40, 1.0, 3.0, "Parotid (each gland)", "xerostomia (saliva flow < 25 % of baseline)",
        "QUANTEC salivary glands (Deasy et al. 2010)",
    ),
}

#: QUANTEC logistic model of pneumonitis on mean lung dose: b0, b1 (per Gy).
QUANTEC_MLD_LOGISTIC = {"b0": -3.87, "b1_per_gy": 0.126}


def eqd2_gy(dose_gy: np.ndarray | float, n_fractions: int | None, alpha_beta_gy: float) -> np.ndarray:
    """Equivalent dose in 2 Gy fractions.

    Args:
        dose_gy: total physical dose(s) in Gy.
        n_fractions: number of fractions the dose was given in (None: return the dose unchanged).
        alpha_beta_gy: alpha/beta of the tissue (Gy).

    Returns:
        EQD2 in Gy, same shape as ``dose_gy``.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    if n_fractions is None:
        return dose
    if n_fractions < 1:
        raise ValueError(f"n_fractions must be >= 1, got {n_fractions}")
    per_fraction = dose / n_fractions
    return dose * (per_fraction + alpha_beta_gy) / (2.0 + alpha_beta_gy)


def geud_gy(dose_gy: np.ndarray, volume: np.ndarray | None, n: float) -> float:
    """Generalised equivalent uniform dose ``(sum v_i D_i^a)^(1/a)``, ``a = 1/n``.

    Args:
        dose_gy: doses (bin centres or voxel doses), Gy.
        volume: volume of each dose (any unit; normalised here); None = equal volumes.
        n: volume-effect parameter (n = 1 gives the mean dose).
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    weights = np.ones_like(dose) if volume is None else np.asarray(volume, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError("gEUD needs a positive total volume")
    a = 1.0 / n
    return float((np.dot(weights, np.power(dose, a)) / total) ** (1.0 / a))


def _bin_doses(dvh: DVH) -> np.ndarray:
    return (np.arange(dvh.differential_cc.size) + 0.5) * dvh.bin_width_gy


def geud_from_dvh(
    dvh: DVH, n: float, *, n_fractions: int | None = None, alpha_beta_gy: float = 3.0
) -> float:
    """gEUD (Gy, EQD2 when ``n_fractions`` is given) of a DVH's bin centres.

    For ``n = 1`` and no conversion the exact mean dose of the DVH is returned, not the binned one.
    """
    if n == 1.0 and n_fractions is None:
        return dvh.mean_gy
    doses = eqd2_gy(_bin_doses(dvh), n_fractions, alpha_beta_gy)
    return geud_gy(doses, dvh.differential_cc, n)


def lkb_ntcp(geud: float, td50_gy: float, m: float) -> float:
    """LKB probability ``Phi((gEUD - TD50) / (m TD50))``."""
    t = (geud - td50_gy) / (m * td50_gy)
    return 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))


def lkb_ntcp_from_dvh(
    dvh: DVH,
    parameters: LkbParameters | str = "pneumonitis-quantec",
    *,
    n_fractions: int | None = None,
    alpha_beta_gy: float | None = None,
) -> float:
    """LKB NTCP of a DVH with a named or given parameter set.

    Args:
        dvh: the organ's DVH (for pneumonitis: lungs minus GTV).
        parameters: a key of :data:`LKB_PARAMETERS` or an :class:`LkbParameters`.
        n_fractions: convert to EQD2 with this many fractions (None: doses already in 2 Gy fractions).
        alpha_beta_gy: override the parameter set's alpha/beta.
    """
    params = LKB_PARAMETERS[parameters] if isinstance(parameters, str) else parameters
    ab = params.alpha_beta_gy if alpha_beta_gy is None else alpha_beta_gy
    return lkb_ntcp(geud_from_dvh(dvh, params.n, n_fractions=n_fractions, alpha_beta_gy=ab),
                    params.td50_gy, params.m)


def logistic_mld_ntcp(mean_lung_dose_gy: float, b0: float = -3.87, b1_per_gy: float = 0.126) -> float:
    """QUANTEC logistic pneumonitis risk ``1 / (1 + exp(-(b0 + b1 MLD)))`` (MLD in EQD2 Gy)."""
    return 1.0 / (1.0 + math.exp(-(b0 + b1_per_gy * mean_lung_dose_gy)))


def ntcp_report(
    lung_dvh: DVH, *, n_fractions: int | None = None, alpha_beta_gy: float = 3.0
) -> Mapping[str, float]:
    """Pneumonitis NTCP of a (normal) lung DVH with every model here.

    Returns:
        ``mld_gy`` (EQD2 when converted), ``logistic_mld``, and ``lkb_<name>`` for each lung set.
    """
    mld = geud_from_dvh(lung_dvh, 1.0, n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy)
    report = {"mld_gy": mld, "logistic_mld": logistic_mld_ntcp(mld)}
    for name, params in LKB_PARAMETERS.items():
        if name.startswith("pneumonitis"):
            report[f"lkb_{name}"] = lkb_ntcp_from_dvh(
                lung_dvh, params, n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy
            )
    return report


#: the name the normal-lung DVH is reported under (TG-263 style: both lungs minus the GTV)
NORMAL_LUNG_NAME = "Lungs-GTV"


@dataclass
class LungDoseReport:
    """The normal lung's dose figures and pneumonitis NTCP of one plan: computed once, read by
    ``rtdeep dvh``, ``rtdeep predict-pneumonitis``, training and the Slicer module.

    Attributes:
        dvh: DVH of the normal lung (Lung_L + Lung_R - GTV*), physical dose as planned.
        mld_gy, v5_pct, v20_pct: mean lung dose (Gy, physical) and % of the normal lung >= 5 / 20 Gy.
        volume_cc: normal-lung volume covered by the dose.
        mld_eqd2_gy: the MLD the NTCP models used (EQD2 when ``n_fractions`` is set, else = mld_gy).
        ntcp_lkb: QUANTEC LKB (TD50 31.4 Gy, m 0.45, n 1).
        ntcp_lkb_seppenwoolde: Seppenwoolde 2003 LKB (TD50 30.8 Gy, m 0.37, n 0.99).
        ntcp_logistic_mld: QUANTEC logistic model on the MLD (b0 -3.87, b1 0.126 / Gy).
        n_fractions, alpha_beta_gy: the EQD2 conversion used (None: doses taken as in 2 Gy fractions).
        lung_crop: the normal-lung crop (CT, mask and dose on a sub-grid of the CT), or None when the
            report was made from a DVH alone; pneumonitis crops are cut from it, not cropped again.
        warnings: synonyms used, exclusions that matched nothing.
    """

    dvh: DVH
    mld_gy: float
    v5_pct: float
    v20_pct: float
    volume_cc: float
    mld_eqd2_gy: float
    ntcp_lkb: float
    ntcp_lkb_seppenwoolde: float
    ntcp_logistic_mld: float
    n_fractions: int | None = None
    alpha_beta_gy: float = 3.0
    lung_crop: object | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_dvh(cls, dvh: DVH, *, n_fractions: int | None = None, alpha_beta_gy: float = 3.0,
                 lung_crop: object | None = None, warnings: Sequence[str] = ()) -> LungDoseReport:
        """The report of a normal-lung DVH (e.g. one sampled on the dose grid by ``rtdeep dvh``)."""
        ntcp = ntcp_report(dvh, n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy)
        return cls(
            dvh=dvh, mld_gy=dvh.mean_gy, v5_pct=dvh.volume_at_dose_pct(5.0), v20_pct=dvh.volume_at_dose_pct(20.0),
            volume_cc=dvh.volume_cc, mld_eqd2_gy=ntcp["mld_gy"], ntcp_lkb=ntcp["lkb_pneumonitis-quantec"],
            ntcp_lkb_seppenwoolde=ntcp["lkb_pneumonitis-seppenwoolde"], ntcp_logistic_mld=ntcp["logistic_mld"],
            n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy, lung_crop=lung_crop, warnings=list(warnings),
        )

    def volume_at_dose_pct(self, dose_gy: float) -> float:
        """V_x of the normal lung in % (e.g. at a crop threshold other than 20 Gy)."""
        return self.dvh.volume_at_dose_pct(dose_gy)

    def to_dict(self) -> dict[str, float | int | None]:
        """The numbers, NTCP in %, for CSV/JSON."""
        return {
            "mld_gy": round(self.mld_gy, 3), "v5_pct": round(self.v5_pct, 2), "v20_pct": round(self.v20_pct, 2),
            "lung_volume_cc": round(self.volume_cc, 1), "mld_eqd2_gy": round(self.mld_eqd2_gy, 3),
            "ntcp_lkb_pct": round(100 * self.ntcp_lkb, 2),
            "ntcp_lkb_seppenwoolde_pct": round(100 * self.ntcp_lkb_seppenwoolde, 2),
            "ntcp_logistic_mld_pct": round(100 * self.ntcp_logistic_mld, 2),
            "n_fractions": self.n_fractions,
        }


def lung_dose_report(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_gy: Volume,
    *,
    lung_names: Sequence[str] = (),
    n_fractions: int | None = None,
    alpha_beta_gy: float = 3.0,
    max_uncovered_fraction: float = 0.01,
) -> LungDoseReport:
    """Crop the normal lung once, sample the dose on it, and report DVH figures and NTCP.

    Args:
        ct: the CT (its grid carries the masks).
        structures: masks on the CT grid by name (or a StructureSet); lungs by TG-263 name or synonym.
        dose_gy: dose in Gy on the CT grid or on its own grid.
        lung_names: the lung structures when not ``Lung_L``/``Lung_R`` (e.g. chosen in Slicer).
        n_fractions, alpha_beta_gy: EQD2 conversion for the NTCP (None: 2 Gy fractions assumed).
        max_uncovered_fraction: more of the normal lung outside the dose grid raises a DoseError.

    Raises:
        StructureError: no lung structure (the message lists the names present).
        DoseError: the dose grid leaves more than ``max_uncovered_fraction`` of the normal lung uncovered.
    """
    from rtdeep.crop import crop_study, get_preset

    spec = get_preset("lung", include=tuple(lung_names)) if lung_names else get_preset("lung")
    crop = crop_study(ct, structures, None, spec)
    grid = crop.ct
    if dose_gy.same_grid(ct):
        (k0, k1), (j0, j1), (i0, i1) = crop.bbox_index
        values = dose_gy.array[k0:k1, j0:j1, i0:i1].astype(np.float32)
        covered = ~np.isnan(values)
    else:
        values, covered = sample_on_grid(dose_gy, grid.affine, grid.shape)
    inside = crop.mask.array
    uncovered = 1.0 - np.count_nonzero(inside & covered) / max(np.count_nonzero(inside), 1)
    if uncovered > max_uncovered_fraction:
        raise DoseError(
            f"the dose grid does not cover the normal lung: {100 * uncovered:.1f}% of it lies outside "
            f"(allowed {100 * max_uncovered_fraction:.1f}%)", roi=NORMAL_LUNG_NAME,
        )
    crop.dose = grid.with_array(np.where(covered, values, np.float32(0.0)))
    dvh = dvh_from_samples(NORMAL_LUNG_NAME, values[inside & covered], grid.voxel_volume_cc,
                           uncovered_fraction=uncovered, grid="ct")
    warnings = list(crop.warnings)
    areas = np.zeros(ct.shape[0])
    areas[crop.bbox_index[0][0]:crop.bbox_index[0][1]] = np.count_nonzero(inside, axis=(1, 2))
    cut = scan_cut(ct, areas)
    if cut is not None:  # a lung base below the scan: the figures are of the part scanned
        warnings.append(f"{NORMAL_LUNG_NAME} is cut by the CT's {cut[0]} ({100 * cut[1]:.0f} % of its largest "
                        "cross-section on the edge slice): its volume, mean dose, V5, V20 and NTCP are of the "
                        "part scanned only")
    return LungDoseReport.from_dvh(dvh, n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy, lung_crop=crop,
                                   warnings=warnings)
