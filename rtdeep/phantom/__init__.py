"""Synthetic patient cohorts (digital phantoms) for thorax and head-and-neck radiotherapy.

Each phantom patient is a continuous model in millimetres (implicit shapes, textures, a beam
dose model, an outcome model) evaluated on a CT grid: ``grid="clinical"`` (512x512, 0.8-1.2 mm
pixels, 2.5-3 mm slices) or ``grid="small"`` (about 128x128, ~4 mm, same field of view and the
same patient). Nothing here is real anatomy; see ``docs/phantom.md``.

Example:
    >>> from rtdeep.phantom import generate_patient
    >>> patient = generate_patient("thorax", index=7, seed=1, grid="small")
    >>> patient.patient_id
    'RTD-THX-0007'
"""

from __future__ import annotations

from rtdeep.phantom.cohort import generate_cohort
from rtdeep.phantom.fingerprint import generator_fingerprint
from rtdeep.phantom.patient import SITES, PhantomPatient, generate_patient, write_patient

__all__ = ["SITES", "PhantomPatient", "generate_cohort", "generate_patient", "generator_fingerprint", "write_patient"]
