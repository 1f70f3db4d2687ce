"""Write a DRR as an RT Image (one file per beam) with the geometry a planning system reads.

Pixels are unsigned 16-bit: stored value = round(line integral of mu * 1000), so
``RescaleSlope 0.001`` gives back the line integral (dimensionless; bone brighter, MONOCHROME2).
The RT Image module carries the imager geometry (RT Image Plane NORMAL, Image Plane Pixel Spacing
and RT Image Position at the imager, RT Image SID, X-Ray Image Receptor Translation
``(0, 0, SAD - SID)`` in the gantry system), the machine's SAD, gantry, collimator and couch
angles, the isocentre, and references to the plan and beam (ReferencedRTPlanSequence,
ReferencedBeamNumber). See ``docs/rtimage.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from rtdeep.dicomrt._writer_common import format_ds, new_rt_object, save_dataset
from rtdeep.dicomrt.types import CtSeries
from rtdeep.dicomrt.uids import RT_PLAN_STORAGE
from rtdeep.drr import DrrImage
from rtdeep.fileio import ensure_new_path

__all__ = ["RT_IMAGE_STORAGE", "STORED_PER_UNIT", "write_rtimage"]

RT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.1"
#: stored pixel value per unit of attenuation line integral
STORED_PER_UNIT = 1000.0


def write_rtimage(
    drr: DrrImage,
    ct: CtSeries,
    out_path: str | os.PathLike[str],
    *,
    plan_sop_instance_uid: str,
    uid_seed: object | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one DRR as an RT Image in the CT's study and frame of reference.

    Args:
        drr: from :func:`rtdeep.drr.compute_drr`.
        ct: the CT it was computed from (patient, study, frame of reference).
        out_path: the new file.
        plan_sop_instance_uid: the RT Plan's SOPInstanceUID (ReferencedRTPlanSequence).
        uid_seed: deterministic UIDs and dates when given.
        overwrite: replace an existing file (default: refuse).
    """
    out_path = ensure_new_path(out_path, overwrite)
    beam = drr.beam
    dataset, date, time = new_rt_object(RT_IMAGE_STORAGE, "RTIMAGE", ct, uid_seed)
    dataset.SeriesNumber = 1
    dataset.SeriesDescription = f"DRR {beam.name}"[:64]
    dataset.InstanceNumber = beam.number
    dataset.PatientOrientation = ""
    dataset.ContentDate = date
    dataset.ContentTime = time
    dataset.ImageType = ["DERIVED", "SECONDARY", "DRR"]
    dataset.ConversionType = "WSD"
    dataset.RTImageLabel = f"DRR {beam.name}"[:16]
    dataset.RTImageDescription = (f"DRR of beam {beam.number} '{beam.name}', gantry {beam.gantry_deg:g} deg, "
                                  f"divergent rays at {drr.step_mm:.3g} mm steps, mu from HU")
    dataset.RTImagePlane = "NORMAL"
    dataset.XRayImageReceptorTranslation = [format_ds(0.0), format_ds(0.0), format_ds(beam.sad_mm - drr.sid_mm)]
    dataset.XRayImageReceptorAngle = "0"
    dataset.ImagePlanePixelSpacing = [format_ds(v) for v in drr.pixel_spacing_mm]
    dataset.RTImagePosition = [format_ds(v) for v in drr.position_mm]
    dataset.RadiationMachineName = beam.machine_name or "UNKNOWN"
    dataset.PrimaryDosimeterUnit = "MU"
    dataset.RadiationMachineSAD = format_ds(beam.sad_mm)
    dataset.RTImageSID = format_ds(drr.sid_mm)
    dataset.FractionNumber = None
    plan = Dataset()
    plan.ReferencedSOPClassUID = RT_PLAN_STORAGE
    plan.ReferencedSOPInstanceUID = plan_sop_instance_uid
    dataset.ReferencedRTPlanSequence = [plan]
    dataset.ReferencedBeamNumber = beam.number
    dataset.GantryAngle = format_ds(beam.gantry_deg % 360.0)
    dataset.BeamLimitingDeviceAngle = format_ds(beam.collimator_deg % 360.0)
    dataset.PatientSupportAngle = format_ds(beam.couch_deg % 360.0)
    dataset.IsocenterPosition = [format_ds(v) for v in beam.isocenter_lps]
    dataset.PatientPosition = beam.patient_position
    stored = np.clip(np.rint(drr.integral.astype(np.float64) * STORED_PER_UNIT), 0, 65535).astype("<u2")
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleIntercept = "0"
    dataset.RescaleSlope = format_ds(1.0 / STORED_PER_UNIT)
    dataset.RescaleType = "US"
    high = float(np.percentile(stored, 99.5))
    dataset.WindowCenter = format_ds(round(high / 2))
    dataset.WindowWidth = format_ds(max(round(high), 2))
    dataset.PixelData = stored.tobytes()
    return save_dataset(dataset, out_path, overwrite=overwrite)
