"""Outcome model of the thorax phantoms: grade >= 2 radiation pneumonitis.

This is an *assumption of the simulation*, not a clinical finding. The risk combines

* the QUANTEC Lyman-Kutcher-Burman NTCP of the lungs (TD50 31.4 Gy, m 0.45, n 1, so the
  generalised EUD is the mean lung dose of Lung_L + Lung_R, which exclude the GTV), and
* an image factor: the volume of pre-existing interstitial abnormality (ground glass with
  reticulation) that lies inside the >= 20 Gy region of the lungs,

as ``logit(risk) = ALPHA + GAMMA * logit(NTCP) + BETA * (1 - exp(-ild_in_v20_cc / ILD_SCALE_CC))``
(ALPHA 2.9, GAMMA 1.8, BETA 3.3, ILD_SCALE_CC 8). GAMMA > 1 makes the dose response of this
simulated population steeper than QUANTEC's, so that dose alone reaches an AUC of about 0.65;
ALPHA sets the event rate to about 40%.
The abnormality elsewhere in the lungs carries no risk, so a model that sees the whole lung is
confounded while one that sees lung ∩ >= 20 Gy is not. The event is drawn as a Bernoulli trial
from the patient's own random stream; its grade (2-5) or non-event grade (0-1) likewise.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit, ndtr

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "ILD_SCALE_CC",
    "M_SLOPE",
    "TD50_GY",
    "draw_grade",
    "lkb_ntcp",
    "lung_dose_metrics",
    "pneumonitis_risk",
]

TD50_GY = 31.4
M_SLOPE = 0.45
ALPHA = 2.9
GAMMA = 1.8
BETA = 3.3
ILD_SCALE_CC = 8.0


def lkb_ntcp(mean_lung_dose_gy: float, td50_gy: float = TD50_GY, m: float = M_SLOPE) -> float:
    """LKB NTCP with n = 1 (gEUD = mean dose): ``Phi((MLD - TD50) / (m TD50))``."""
    return float(ndtr((mean_lung_dose_gy - td50_gy) / (m * td50_gy)))


def pneumonitis_risk(mean_lung_dose_gy: float, ild_in_v20_cc: float) -> float:
    """Model probability of grade >= 2 pneumonitis (see the module docstring)."""
    ntcp = min(max(lkb_ntcp(mean_lung_dose_gy), 1e-6), 1 - 1e-6)
    image_factor = 1.0 - np.exp(-max(ild_in_v20_cc, 0.0) / ILD_SCALE_CC)
    return float(expit(ALPHA + GAMMA * logit(ntcp) + BETA * image_factor))


def lung_dose_metrics(dose_gy: np.ndarray, lungs: np.ndarray, ild: np.ndarray, voxel_cc: float) -> dict[str, float]:
    """Mean lung dose (Gy), V20 and V5 (% of lung volume), ILD volume and ILD inside V20 (cc).

    Args:
        dose_gy: dose on the CT grid ``[k, j, i]``.
        lungs: Lung_L | Lung_R (GTV excluded) on the same grid.
        ild: interstitial-abnormality mask on the same grid.
        voxel_cc: voxel volume in cm^3.
    """
    lung_dose = dose_gy[lungs]
    n = max(lung_dose.size, 1)
    high = dose_gy >= 20.0
    return {
        "mld_gy": float(lung_dose.mean()) if lung_dose.size else 0.0,
        "v20_pct": 100.0 * float((lung_dose >= 20.0).sum()) / n,
        "v5_pct": 100.0 * float((lung_dose >= 5.0).sum()) / n,
        "ild_volume_cc": float((ild & lungs).sum()) * voxel_cc,
        "ild_in_v20_cc": float((ild & lungs & high).sum()) * voxel_cc,
    }


def draw_grade(risk: float, rng: np.random.Generator) -> tuple[int, int]:
    """(grade, pneumonitis 0/1) for one patient; the same ``rng`` state gives the same answer."""
    u_event, u_grade = rng.uniform(size=2)
    if u_event < risk:
        grade = 2 if u_grade < 0.7 else 3 if u_grade < 0.94 else 4 if u_grade < 0.99 else 5
        return grade, 1
    return (0 if u_grade < 0.55 else 1), 0
