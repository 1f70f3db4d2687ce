"""DICOM RT input and output: CT series, RT Structure Set, RT Dose, RT Plan, and validation.

Readers return :mod:`rtdeep.dicomrt.types` objects holding :class:`rtdeep.volume.Volume` arrays;
writers take them back. Nothing here knows Slicer.

Example:
    >>> from rtdeep.dicomrt import load_study
    >>> study = load_study("patient_dir")          # doctest: +SKIP
    >>> study.structure_set.names(), study.dose_on_ct.array.max()  # doctest: +SKIP
"""

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.ct_writer import write_ct_series
from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
from rtdeep.dicomrt.rtdose_writer import write_rtdose
from rtdeep.dicomrt.rtplan_reader import read_rtplan
from rtdeep.dicomrt.rtplan_writer import write_rtplan
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.scan import DicomFileInfo, scan_folder
from rtdeep.dicomrt.study import load_study
from rtdeep.dicomrt.types import Beam, CtSeries, DoseGrid, PatientInfo, PlanSummary, Roi, StructureSet, Study
from rtdeep.dicomrt.validate import Finding, check_rtstruct, validate_paths

__all__ = [
    "Beam", "CtSeries", "DicomFileInfo", "DoseGrid", "Finding", "PatientInfo", "PlanSummary", "Roi",
    "StructureSet", "Study", "check_rtstruct", "load_study", "read_ct_series", "read_rtdose",
    "read_rtplan", "read_rtstruct", "resample_dose", "scan_folder", "validate_paths", "write_ct_series",
    "write_rtdose", "write_rtplan", "write_rtstruct",
]
