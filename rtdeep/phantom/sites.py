"""The two phantom sites: how each samples, renders and scores a patient.

Names, organs, colours and prescriptions come from the one site table, :mod:`rtdeep.sites`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtdeep.phantom import outcome as outcome_model
from rtdeep.phantom.grid import GridSpec
from rtdeep.phantom.render import Canvas
from rtdeep.sites import SITES, Site

__all__ = ["SITE_SPECS", "PhantomSite"]


@dataclass(frozen=True)
class PhantomSite:
    """A site of the phantom: patient-ID code and number, and the sample / render / outcome functions."""

    site: Site
    code: str
    number: int
    sample: Callable[[np.random.Generator], Any]
    render: Callable[..., Canvas]
    outcome: Callable[[Any, Canvas, GridSpec, np.ndarray, np.random.Generator], dict[str, Any]]

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def prescription_gy(self) -> float:
        return self.site.prescription_gy

    @property
    def fractions(self) -> int:
        return self.site.fractions


def _thorax_outcome(model: Any, canvas: Canvas, grid: GridSpec, dose_ct: np.ndarray,
                    rng: np.random.Generator) -> dict[str, Any]:
    lungs = canvas.mask("Lung_L") | canvas.mask("Lung_R")
    voxel_cc = float(np.prod(grid.spacing_mm)) / 1000.0
    metrics = outcome_model.lung_dose_metrics(dose_ct, lungs, canvas.mask("ILD"), voxel_cc)
    ntcp = outcome_model.lkb_ntcp(metrics["mld_gy"])
    image_factor = 1.0 - float(np.exp(-metrics["ild_in_v20_cc"] / outcome_model.ILD_SCALE_CC))
    risk = outcome_model.pneumonitis_risk(metrics["mld_gy"], metrics["ild_in_v20_cc"])
    grade, event = outcome_model.draw_grade(risk, rng)
    row = {key: round(value, 3) for key, value in metrics.items()}
    row.update({"lung_cc": round(float(lungs.sum()) * voxel_cc, 1), "lkb_ntcp": round(ntcp, 4),
                "ild_patches": len(model.ild_patches), "ild_near_tumour": int(model.ild_near_tumour),
                "image_factor": round(image_factor, 4), "risk": round(risk, 4), "grade": grade, "pneumonitis": event})
    return row


def _headneck_outcome(model: Any, canvas: Canvas, grid: GridSpec, dose_ct: np.ndarray,
                      rng: np.random.Generator) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in ("Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R", "SpinalCord", "Brainstem"):
        mask = canvas.mask(name)
        key = name.lower()
        if name in ("SpinalCord", "Brainstem"):
            row[f"{key}_max_gy"] = round(float(dose_ct[mask].max()) if mask.any() else 0.0, 3)
        else:
            row[f"{key}_mean_gy"] = round(float(dose_ct[mask].mean()) if mask.any() else 0.0, 3)
    row.update({"mld_gy": "", "v20_pct": "", "v5_pct": "", "lkb_ntcp": "", "ild_volume_cc": "", "ild_in_v20_cc": "",
                "image_factor": "", "risk": "", "grade": "", "pneumonitis": ""})
    return row


def _build() -> dict[str, PhantomSite]:
    from rtdeep.phantom.anatomy_headneck import render_headneck, sample_headneck
    from rtdeep.phantom.anatomy_thorax import render_thorax, sample_thorax

    return {
        "thorax": PhantomSite(SITES["thorax"], "THX", 1, sample_thorax, render_thorax, _thorax_outcome),
        "headneck": PhantomSite(SITES["headneck"], "HN", 2, sample_headneck, render_headneck, _headneck_outcome),
    }


SITE_SPECS: dict[str, PhantomSite] = _build()
