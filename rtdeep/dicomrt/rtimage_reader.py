"""Read RT Images (DRRs, portal images): beam, angles, imager geometry; draw them with the field.

:func:`read_rt_image_info` reads what ``rtdeep info`` lists. :func:`isocenter_pixel` says where the
tags put the isocentre: where the beam axis meets the imager, ``(x, y) = (0, 0)`` in RT Image
coordinates, shifted by the receptor's lateral translation. :func:`draw_rt_image_png` draws the
image with the field outline (jaws, MLC when the plan has one) projected from the isocentre plane
to the imager (magnification ``SID / SAD``) and the projected isocentre.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom

from rtdeep.dicomrt.dataset import optional_float
from rtdeep.dicomrt.types import RtImageInfo
from rtdeep.errors import DicomReadError
from rtdeep.volume import Volume

__all__ = ["draw_rt_image_png", "isocenter_pixel", "read_rt_image_info", "rt_image_volume"]


def _exposure_value(ds: pydicom.Dataset, keyword: str) -> float | None:
    """A beam angle from the top level, else from the first ExposureSequence item (portal images)."""
    value = optional_float(ds, keyword)
    if value is None:
        for item in ds.get("ExposureSequence", []) or []:
            value = optional_float(item, keyword)
            if value is not None:
                break
    return value


def read_rt_image_info(path: str | os.PathLike[str]) -> RtImageInfo:
    """What an RT Image shows: beam number, gantry and collimator angles, size, pixel spacing, SAD, SID.

    Raises:
        DicomReadError: the file is not an RT Image or lacks Rows/Columns.
    """
    path = Path(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if str(ds.get("Modality", "")) != "RTIMAGE":
        raise DicomReadError(f"not an RT Image (Modality '{ds.get('Modality', '')}')", path=path,
                             tag="Modality (0008,0060)")
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomReadError("RT Image without Rows/Columns", path=path, tag="Rows (0028,0010)")
    spacing = [float(v) for v in ds.get("ImagePlanePixelSpacing", []) or []] or [float("nan")] * 2
    plans = ds.get("ReferencedRTPlanSequence", []) or []
    beam_number = ds.get("ReferencedBeamNumber")
    image_type = list(ds.get("ImageType", []) or [])
    return RtImageInfo(
        path=path,
        label=str(ds.get("RTImageLabel", "") or ""),
        beam_number=int(beam_number) if beam_number not in (None, "") else None,
        gantry_angle_deg=_exposure_value(ds, "GantryAngle"),
        collimator_angle_deg=_exposure_value(ds, "BeamLimitingDeviceAngle"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=(spacing[0], spacing[1]),
        sad_mm=optional_float(ds, "RadiationMachineSAD"),
        sid_mm=optional_float(ds, "RTImageSID"),
        image_kind=str(image_type[2]) if len(image_type) > 2 else "",
        referenced_plan_uid=str(plans[0].get("ReferencedSOPInstanceUID", "")) if plans else "",
    )


def isocenter_pixel(ds: pydicom.Dataset) -> np.ndarray:
    """(row, column) of the projected isocentre according to the RT Image's geometry tags.

    The beam axis meets the imager at RT Image coordinates (0, 0) less the receptor's lateral
    translation (X-Ray Image Receptor Translation x, y); pixel ``(r, c)`` is at
    ``x = RTImagePosition[0] + c * spacing[1]``, ``y = RTImagePosition[1] - r * spacing[0]``.
    """
    position = [float(v) for v in ds.RTImagePosition]
    spacing = [float(v) for v in ds.ImagePlanePixelSpacing]
    translation = [float(v) for v in ds.get("XRayImageReceptorTranslation", [0, 0, 0]) or [0, 0, 0]]
    x, y = -translation[0], -translation[1]
    return np.array([(position[1] - y) / spacing[0], (x - position[0]) / spacing[1]])


def rt_image_volume(path: str | os.PathLike[str]) -> Volume:
    """An RT Image placed where its imager stood, as a one-slice :class:`Volume` in patient LPS.

    The affine maps (column, row, 0) to the pixel's position on the imager plane in the room (beam's
    eye view geometry): from the isocentre, gantry, couch, SAD and SID tags. Through
    :func:`rtdeep.slicer.volume_node.node_from_volume` it becomes a volume node that sits in place
    beside the CT, as SlicerRT's beam's eye view shows it.

    Raises:
        DicomReadError: a tag the geometry needs is missing (the error names it).
    """
    from rtdeep.drr import BeamGeometry

    path = Path(path)
    ds = pydicom.dcmread(path)
    for keyword in ("IsocenterPosition", "RTImagePosition", "ImagePlanePixelSpacing", "RTImageSID"):
        if keyword not in ds:
            raise DicomReadError(f"RT Image without {keyword}: cannot place it in the room", path=path, tag=keyword)
    beam = BeamGeometry(number=int(ds.get("ReferencedBeamNumber", 0) or 0), name="",
                        sad_mm=optional_float(ds, "RadiationMachineSAD") or 1000.0,
                        gantry_deg=_exposure_value(ds, "GantryAngle") or 0.0,
                        collimator_deg=_exposure_value(ds, "BeamLimitingDeviceAngle") or 0.0,
                        couch_deg=_exposure_value(ds, "PatientSupportAngle") or 0.0,
                        isocenter_lps=np.array([float(v) for v in ds.IsocenterPosition]))
    x_g, y_g, z_g = beam.axes()
    sid = float(ds.RTImageSID)
    spacing = [float(v) for v in ds.ImagePlanePixelSpacing]
    position = [float(v) for v in ds.RTImagePosition]
    translation = [float(v) for v in ds.get("XRayImageReceptorTranslation", [0, 0, 0]) or [0, 0, 0]]
    centre = beam.source_lps() - sid * z_g + translation[0] * x_g + translation[1] * y_g
    affine = np.eye(4)
    affine[:3, 0] = x_g * spacing[1]
    affine[:3, 1] = -y_g * spacing[0]
    affine[:3, 2] = np.cross(affine[:3, 0], affine[:3, 1]) / (spacing[0] * spacing[1])
    affine[:3, 3] = centre + position[0] * x_g + position[1] * y_g
    image = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    return Volume(image[None], affine)


def _field_outline(plan_path: Path, beam_number: int, magnification: float, collimator_deg: float
                   ) -> list[np.ndarray]:
    """Polylines (x, y mm at the imager) of the jaws and the MLC aperture of one beam."""
    from rtdeep.drr import read_beam_geometries

    beam = next((b for b in read_beam_geometries(plan_path) if b.number == beam_number), None)
    if beam is None:
        return []
    angle = np.radians(collimator_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lines = []
    if beam.jaws_mm is not None:
        x1, x2, y1, y2 = beam.jaws_mm
        lines.append(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]))
    if beam.mlc_boundaries_mm is not None and beam.mlc_positions_mm is not None:
        bounds, (bank_a, bank_b) = beam.mlc_boundaries_mm, beam.mlc_positions_mm
        right = [[bank_b[i], y] for i in range(len(bank_b)) for y in (bounds[i], bounds[i + 1])]
        left = [[bank_a[i], y] for i in reversed(range(len(bank_a))) for y in (bounds[i + 1], bounds[i])]
        lines.append(np.array(right + left + right[:1]))
    return [(line @ rotation.T) * magnification for line in lines]


def draw_rt_image_png(path: str | os.PathLike[str], out_png: str | os.PathLike[str], *,
                      plan_path: str | os.PathLike[str] | None = None) -> Path:
    """Draw an RT Image with the projected isocentre (cross) and, given its plan, the field outline.

    Returns:
        The PNG written (never overwrites).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rtdeep.fileio import atomic_write

    path = Path(path)
    ds = pydicom.dcmread(path)
    image = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    spacing = [float(v) for v in ds.ImagePlanePixelSpacing]
    position = [float(v) for v in ds.RTImagePosition]
    extent = (position[0] - spacing[1] / 2, position[0] + (image.shape[1] - 0.5) * spacing[1],
              position[1] - (image.shape[0] - 0.5) * spacing[0], position[1] + spacing[0] / 2)
    figure, axes = plt.subplots(figsize=(6, 6), dpi=100)
    axes.imshow(image, cmap="gray", extent=extent, origin="upper")
    iso = isocenter_pixel(ds)
    iso_xy = (position[0] + iso[1] * spacing[1], position[1] - iso[0] * spacing[0])
    axes.plot(*iso_xy, marker="+", markersize=14, color="red", label="isocentre")
    sad, sid = optional_float(ds, "RadiationMachineSAD"), optional_float(ds, "RTImageSID")
    if plan_path is not None and sad and sid and ds.get("ReferencedBeamNumber") is not None:
        lines = _field_outline(Path(plan_path), int(ds.ReferencedBeamNumber), sid / sad,
                               optional_float(ds, "BeamLimitingDeviceAngle") or 0.0)
        for index, line in enumerate(lines):
            axes.plot(line[:, 0] + iso_xy[0], line[:, 1] + iso_xy[1], color="yellow" if index == 0 else "cyan",
                      linewidth=1.2, label="jaws" if index == 0 else "MLC")
    axes.set_xlabel("x (mm at the imager)")
    axes.set_ylabel("y (mm at the imager)")
    axes.set_title(f"{ds.get('RTImageLabel', '')}  gantry {optional_float(ds, 'GantryAngle') or 0:g} deg", fontsize=9)
    axes.legend(loc="lower right", fontsize=7)

    def write(tmp: Path) -> None:
        figure.savefig(tmp, format="png")

    try:
        return atomic_write(out_png, write)
    finally:
        plt.close(figure)
