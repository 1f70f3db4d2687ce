"""A clinic's own cohort: scan an export folder, pair CT with its RT objects, map structure names
to TG-263, and write the manifest that training and batch inference read."""

from __future__ import annotations

from rtdeep.cohort.build import CohortResult, build_cohort
from rtdeep.cohort.manifest import CohortRow, is_cohort_manifest, organ_rois, read_cohort_manifest

__all__ = ["CohortResult", "CohortRow", "build_cohort", "is_cohort_manifest", "organ_rois", "read_cohort_manifest"]
