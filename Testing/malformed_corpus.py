"""A corpus of malformed (and of valid but unusual) variants of one phantom study, built at test time.

Each :class:`Case` copies the valid base study (``CT/``, ``RS.dcm``, ``RD.dcm``, ``RP.dcm`` written by
:func:`rtdeep.phantom.write_patient` on the small grid) and changes one thing: a tag removed, a value
made absurd, a file cut short, a folder made unreadable, an output already there. The test
(Testing/test_malformed_inputs.py) runs the CLI on each as a real subprocess and asserts one clear
error line (exit 2) naming the file and the tag or ROI, no traceback, nothing written, inputs
unchanged; valid variants must succeed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

__all__ = ["CASES", "VALID_CASES", "Case", "build_base_study", "ct_files", "edit"]


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes:
        name: short id (the test's parameter id).
        build: changes the copied study folder in place (may also prepare the output folder, the
            second argument).
        command: ``info``, ``validate``, ``dvh``, ``crop``, ``compare``, ``segment`` or ``predict``.
        expect: text the single error line must contain (the file's name, the tag or ROI).
        input_defect: ``rtdeep validate`` must report it too (False for output set-ups and for a
            folder that is only ambiguous, e.g. two CT series).
        unreadable: the case removes read permission (the CLI runs without root's override).
        extra_args: more CLI arguments.
    """

    name: str
    build: Callable[[Path, Path], None]
    command: str
    expect: tuple[str, ...]
    input_defect: bool = True
    unreadable: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)


@contextlib.contextmanager
def _lenient() -> Iterator[None]:
    """Let pydicom write invalid values (that is the point here)."""
    saved = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    """Read ``path``, apply ``change``, write it back in its own encoding."""
    with _lenient():
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=False)


def ct_files(study: Path) -> list[Path]:
    return sorted((study / "CT").glob("*.dcm"))


def build_base_study(out_dir: Path, *, oblique: bool = False) -> Path:
    """Write 40 slices around the tumour of phantom thorax patient 1 (seed 1, small grid); return its folder.

    ``oblique``: the same patient with every grid rotated 20 degrees about a tilted axis (CT, masks
    and dose stay consistent), a valid study whose slices are not axial.
    """
    from rtdeep.phantom import generate_patient, write_patient
    from rtdeep.volume import Volume

    patient = _slab(generate_patient("thorax", index=1, seed=1, grid="small"), 40)
    if oblique:
        axis = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
        angle = np.radians(20.0)
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(4)
        rotation[:3, :3] = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        patient = dataclasses.replace(
            patient,
            ct=Volume(patient.ct.array, rotation @ patient.ct.affine),
            dose=Volume(patient.dose.array, rotation @ patient.dose.affine),
        )
    return write_patient(patient, out_dir)


def _slab(patient, n_slices: int):
    """The patient cut to ``n_slices`` CT slices centred on the GTV (the dose grid is kept whole)."""
    from rtdeep.volume import Volume

    gtv = next(roi for roi in patient.rois if roi.name == "GTV").mask
    centre = int(np.flatnonzero(gtv.any(axis=(1, 2))).mean())
    k0 = max(0, min(centre - n_slices // 2, patient.ct.shape[0] - n_slices))
    k1 = k0 + n_slices

    def cut(volume: Volume) -> Volume:
        affine = volume.affine.copy()
        affine[:3, 3] += affine[:3, 2] * k0
        return Volume(volume.array[k0:k1].copy(), affine)

    return dataclasses.replace(
        patient, ct=cut(patient.ct), dose_on_ct=cut(patient.dose_on_ct),
        rois=[dataclasses.replace(roi, mask=roi.mask[k0:k1].copy()) for roi in patient.rois],
        ild_mask=None if patient.ild_mask is None else patient.ild_mask[k0:k1].copy())


# ------------------------------------------------------------------------------------------ helpers


def _all_ct(change: Callable[[pydicom.Dataset], None]) -> Callable[[Path, Path], None]:
    def build(study: Path, _out: Path) -> None:
        for path in ct_files(study):
            edit(path, change)
    return build


def _one_ct(change: Callable[[pydicom.Dataset], None], index: int = 10) -> Callable[[Path, Path], None]:
    def build(study: Path, _out: Path) -> None:
        edit(ct_files(study)[index], change)
    return build


def _object(name: str, change: Callable[[pydicom.Dataset], None]) -> Callable[[Path, Path], None]:
    def build(study: Path, _out: Path) -> None:
        edit(study / name, change)
    return build


def _cut(relative: str | int, keep: float) -> Callable[[Path, Path], None]:
    """Truncate a file to ``keep`` of its length (a CT slice by index, or an object by name)."""
    def build(study: Path, _out: Path) -> None:
        path = ct_files(study)[relative] if isinstance(relative, int) else study / relative
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return build


def _empty(relative: str | int) -> Callable[[Path, Path], None]:
    def build(study: Path, _out: Path) -> None:
        path = ct_files(study)[relative] if isinstance(relative, int) else study / relative
        path.write_bytes(b"")
    return build


def _delete(relative: str | int) -> Callable[[Path, Path], None]:
    def build(study: Path, _out: Path) -> None:
        path = ct_files(study)[relative] if isinstance(relative, int) else study / relative
        path.unlink()
    return build


def _set(keyword: str, vr: str, value: object) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, vr, value)
    return change


def _patched(keyword: str, placeholder: str, garbage: bytes, where: str | int = 10) -> Callable[[Path, Path], None]:
    """Give ``keyword`` a non-numeric value pydicom refuses to write: write a unique placeholder of
    the same length, then replace its bytes in the file (a CT slice by index, or an object by name)."""
    assert len(placeholder) == len(garbage) and len(placeholder) % 2 == 0

    def build(study: Path, _out: Path) -> None:
        path = ct_files(study)[where] if isinstance(where, int) else study / where
        if keyword == "ROINumber":
            edit(path, lambda ds: setattr(ds.StructureSetROISequence[1], "ROINumber", placeholder))
        else:
            edit(path, lambda ds: setattr(ds, keyword, placeholder))
        data = path.read_bytes()
        assert data.count(placeholder.encode()) == 1
        path.write_bytes(data.replace(placeholder.encode(), garbage))
    return build


def _corrupt_item(study: Path, _out: Path) -> None:
    """Overwrite the tag of the first item of a ContourSequence, lengths kept (pydicom parses it late)."""
    path = study / "RS.dcm"
    data = bytearray(path.read_bytes())
    item = data.index(b"\xfe\xff\x00\xe0", data.index(b"\x06\x30\x40\x00"))
    data[item:item + 4] = b"\x08\x00\x05\x00"
    path.write_bytes(bytes(data))


def _unknown_vr(study: Path, _out: Path) -> None:
    """SeriesDescription's VR bytes 'LO' become 'UM' (no such VR), lengths kept."""
    path = ct_files(study)[10]
    data = bytearray(path.read_bytes())
    at = data.index(b"\x08\x00\x3e\x10LO")
    data[at + 4:at + 6] = b"UM"
    path.write_bytes(bytes(data))


def _fractions_as_text(study: Path, _out: Path) -> None:
    path = study / "RP.dcm"
    edit(path, lambda ds: setattr(ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", "98765"))
    data = path.read_bytes()
    assert data.count(b"98765 ") == 1
    path.write_bytes(data.replace(b"98765 ", b"thirty"))


def _drop(keyword: str) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        del ds[keyword]
    return change


def _first_contour(change: Callable[[pydicom.Dataset], None], roi_index: int = 3) -> Callable[[pydicom.Dataset], None]:
    def apply(ds: pydicom.Dataset) -> None:
        change(ds.ROIContourSequence[roi_index].ContourSequence[0])
    return apply


def _nan_contour(item: pydicom.Dataset) -> None:
    values = [str(v) for v in item.ContourData]
    values[4] = "nan"
    item[0x30060050] = DataElement(0x30060050, "DS", "\\".join(values))


def _short_contour(item: pydicom.Dataset) -> None:
    values = [str(v) for v in item.ContourData][:-1]
    item[0x30060050] = DataElement(0x30060050, "DS", "\\".join(values))


def _second_roi(change: Callable[[pydicom.Dataset], None]) -> Callable[[pydicom.Dataset], None]:
    def apply(ds: pydicom.Dataset) -> None:
        change(ds.StructureSetROISequence[1])
    return apply


def _duplicate_roi_number(ds: pydicom.Dataset) -> None:
    ds.StructureSetROISequence[2].ROINumber = ds.StructureSetROISequence[1].ROINumber


def _duplicate_roi_name(ds: pydicom.Dataset) -> None:
    ds.StructureSetROISequence[2].ROIName = ds.StructureSetROISequence[1].ROIName


def _other_frame(ds: pydicom.Dataset) -> None:
    new = generate_uid()
    ds.FrameOfReferenceUID = new
    for item in ds.get("ReferencedFrameOfReferenceSequence", []):
        item.FrameOfReferenceUID = new
    for item in ds.get("StructureSetROISequence", []):
        item.ReferencedFrameOfReferenceUID = new


def _negative_dose(ds: pydicom.Dataset) -> None:
    values = np.frombuffer(ds.PixelData, "<u4").astype(np.int64)
    signed = (values // 2).astype("<i4")
    signed[: signed.size // 3] *= -1
    ds.PixelRepresentation = 1
    ds.PixelData = signed.tobytes()


def _more_frames(ds: pydicom.Dataset) -> None:
    ds.NumberOfFrames = int(ds.NumberOfFrames) + 1
    ds.GridFrameOffsetVector = [*ds.GridFrameOffsetVector, float(ds.GridFrameOffsetVector[-1]) + 4.0]


def _offsets_missing_one(ds: pydicom.Dataset) -> None:
    ds.GridFrameOffsetVector = list(ds.GridFrameOffsetVector)[:-1]


def _offsets_irregular(ds: pydicom.Dataset) -> None:
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[5] += 1.7
    ds.GridFrameOffsetVector = offsets


def _shift_dose(ds: pydicom.Dataset) -> None:
    ds.ImagePositionPatient = [float(v) + 3000.0 for v in ds.ImagePositionPatient]


def _tilt(study: Path, _out: Path) -> None:
    for k, path in enumerate(ct_files(study)):
        edit(path, lambda ds, k=k: setattr(ds, "ImagePositionPatient",
                                           [float(ds.ImagePositionPatient[0]) + 0.6 * k,
                                            *[float(v) for v in ds.ImagePositionPatient[1:]]]))


def _variable_spacing(study: Path, _out: Path) -> None:
    """A variable-thickness protocol: the upper half of the slices 1.4 times as far apart as the lower."""
    files = ct_files(study)
    z0, z1 = (float(pydicom.dcmread(files[k], stop_before_pixels=True).ImagePositionPatient[2]) for k in (0, 1))
    for k, path in enumerate(files[20:], start=20):
        edit(path, lambda ds, k=k: setattr(ds, "ImagePositionPatient", [
            *[float(v) for v in ds.ImagePositionPatient[:2]], float(ds.ImagePositionPatient[2]) + 0.4 * (z1 - z0) * (k - 20)]))


def _mixed_size(ds: pydicom.Dataset) -> None:
    ds.Rows, ds.Columns = 64, 64
    ds.PixelData = np.zeros((64, 64), "<i2").tobytes()


def _eight_bit_over_sixteen(ds: pydicom.Dataset) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7


def _duplicate_position(study: Path, _out: Path) -> None:
    files = ct_files(study)
    position = pydicom.dcmread(files[11], stop_before_pixels=True).ImagePositionPatient
    edit(files[10], lambda ds: setattr(ds, "ImagePositionPatient", list(position)))


def _jpeg2000_garbage(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"


def _second_series(study: Path, _out: Path) -> None:
    copy = study / "CT_copy"
    shutil.copytree(study / "CT", copy)
    series = generate_uid()
    for path in sorted(copy.glob("*.dcm")):
        edit(path, lambda ds: (setattr(ds, "SeriesInstanceUID", series), setattr(ds, "SOPInstanceUID", generate_uid()),
                               setattr(ds, "SeriesDescription", "second series")))


def _symlink_loop(study: Path, _out: Path) -> None:
    os.symlink("..", study / "CT" / "loop")


def _broken_symlink(study: Path, _out: Path) -> None:
    os.symlink("no_such_file.dcm", study / "CT" / "CT_9999.dcm")


def _unreadable_folder(study: Path, _out: Path) -> None:
    extra = study / "extra"
    extra.mkdir()
    shutil.copy(study / "RP.dcm", extra / "RP_copy.dcm")
    extra.chmod(0)


def _unreadable_file(study: Path, _out: Path) -> None:
    ct_files(study)[5].chmod(0)


def _only_text(study: Path, _out: Path) -> None:
    shutil.rmtree(study)
    study.mkdir()
    (study / "notes.txt").write_text("no DICOM here\n")


def _no_ct(study: Path, _out: Path) -> None:
    shutil.rmtree(study / "CT")


def _empty_folder(study: Path, _out: Path) -> None:
    shutil.rmtree(study)
    study.mkdir()


def _existing_output(name: str) -> Callable[[Path, Path], None]:
    def build(_study: Path, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("already here\n")
    return build


def _output_is_file(_study: Path, out: Path) -> None:
    out.write_text("a file where the output folder should be\n")


def _output_unwritable(_study: Path, out: Path) -> None:
    out.mkdir()
    out.chmod(0o555)


CASES: list[Case] = [
    # ---------------------------------------------------------------- CT series
    Case("ct_pixel_spacing_zero", _all_ct(_set("PixelSpacing", "DS", "0\\0")), "info", ("CT_0001.dcm", "PixelSpacing")),
    Case("ct_rows_columns_65535", _all_ct(lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535))),
         "info", ("CT", "Rows", "RTDEEP_MAX_VOXELS")),
    Case("ct_no_rescale_intercept", _one_ct(_drop("RescaleIntercept")), "info", ("CT_0011.dcm", "RescaleIntercept")),
    Case("ct_no_rescale_slope", _one_ct(_drop("RescaleSlope")), "dvh", ("CT_0011.dcm", "RescaleSlope")),
    Case("ct_8bit_declared_16bit_data", _one_ct(_eight_bit_over_sixteen), "info", ("CT_0011.dcm", "PixelData")),
    Case("ct_truncated_slice", _cut(30, 0.7), "dvh", ("CT_0031.dcm", "truncated")),
    Case("ct_truncated_in_header", _cut(3, 0.05), "info", ("CT_0004.dcm", "truncated")),
    Case("ct_empty_file", _empty(7), "info", ("CT_0008.dcm", "empty")),
    Case("ct_missing_slice", _delete(25), "dvh", ("CT", "ImagePositionPatient", "missing slices")),
    Case("ct_gantry_tilt", _tilt, "info", ("CT", "ImagePositionPatient", "tilt")),
    Case("ct_variable_slice_spacing", _variable_spacing, "segment", ("CT", "ImagePositionPatient", "uneven slice spacing")),
    Case("ct_mixed_orientation", _one_ct(_set("ImageOrientationPatient", "DS", "1\\0\\0\\0\\0.8\\-0.6")), "info",
         ("CT_0011.dcm", "ImageOrientationPatient")),
    Case("ct_mixed_size", _one_ct(_mixed_size), "info", ("CT_0011.dcm", "Rows")),
    Case("ct_duplicate_position", _duplicate_position, "info", ("CT_0011.dcm", "ImagePositionPatient")),
    Case("ct_nan_orientation", _all_ct(_set("ImageOrientationPatient", "DS", "nan\\0\\0\\0\\1\\0")), "info",
         ("CT_0001.dcm", "ImageOrientationPatient")),
    Case("ct_degenerate_orientation", _all_ct(_set("ImageOrientationPatient", "DS", "1\\0\\0\\1\\0\\0")), "info",
         ("CT_0001.dcm", "ImageOrientationPatient")),
    Case("ct_nan_position", _one_ct(_set("ImagePositionPatient", "DS", "0\\nan\\0")), "info",
         ("CT_0011.dcm", "ImagePositionPatient")),
    Case("ct_undecodable_jpeg2000", _one_ct(_jpeg2000_garbage), "info", ("CT_0011.dcm", "PixelData")),
    Case("ct_no_pixel_data", _one_ct(_drop("PixelData")), "info", ("CT_0011.dcm", "PixelData")),
    Case("ct_empty_pixel_data", _one_ct(lambda ds: setattr(ds, "PixelData", b"")), "info", ("CT_0011.dcm", "PixelData")),
    Case("ct_unknown_vr_um", _unknown_vr, "dvh", ("CT_0011.dcm", "UM")),
    Case("ct_empty_rows", _one_ct(_set("Rows", "US", None)), "info", ("CT_0011.dcm", "Rows")),
    Case("ct_rows_two_values", _one_ct(_set("Rows", "US", [128, 128])), "info", ("CT_0011.dcm", "Rows")),
    Case("ct_empty_bits_allocated", _one_ct(_set("BitsAllocated", "US", None)), "info",
         ("CT_0011.dcm", "BitsAllocated")),
    Case("ct_rescale_not_a_number", _patched("RescaleIntercept", "-1024.987654", b"minus-1024HU"), "info",
         ("CT_0011.dcm", "RescaleIntercept")),
    Case("ct_two_series_without_uid", _second_series, "dvh", ("--series-uid", "SeriesInstanceUID"), input_defect=False),
    Case("ct_symlink_loop", _symlink_loop, "info", ("loop", "symbolic link loop")),
    Case("ct_broken_symlink", _broken_symlink, "dvh", ("CT_9999.dcm", "broken symbolic link")),
    Case("unreadable_folder", _unreadable_folder, "info", ("extra", "permission denied"), unreadable=True),
    Case("unreadable_file", _unreadable_file, "dvh", ("CT_0006.dcm", "permission denied"), unreadable=True),
    Case("no_dicom_at_all", _only_text, "info", ("no DICOM files",)),
    Case("empty_folder", _empty_folder, "dvh", ("no CT images",)),
    Case("no_ct_series", _no_ct, "dvh", ("no CT images",), input_defect=False),
    # ---------------------------------------------------------------- RT Structure Set
    Case("rs_nan_contour", _object("RS.dcm", _first_contour(_nan_contour)), "dvh", ("RS.dcm", "ContourData", "Heart")),
    Case("rs_contour_not_triples", _object("RS.dcm", _first_contour(_short_contour)), "info",
         ("RS.dcm", "ContourData", "Heart")),
    Case("rs_truncated", _cut("RS.dcm", 0.6), "info", ("RS.dcm", "truncated")),
    Case("rs_empty_file", _empty("RS.dcm"), "dvh", ("RS.dcm", "empty")),
    Case("rs_corrupt_sequence_item", _corrupt_item, "dvh", ("RS.dcm", "ContourSequence", "corrupt sequence")),
    Case("rs_duplicate_roi_number", _object("RS.dcm", _duplicate_roi_number), "info", ("RS.dcm", "ROINumber", "Lung_R")),
    Case("rs_duplicate_roi_name", _object("RS.dcm", _duplicate_roi_name), "dvh", ("RS.dcm", "ROIName", "Lung_L")),
    Case("rs_roi_number_not_a_number", _patched("ROINumber", "987654", b"two   ", "RS.dcm"), "info",
         ("RS.dcm", "ROINumber", "Lung_L")),
    Case("rs_roi_number_two_values", _object("RS.dcm", _second_roi(_set("ROINumber", "IS", "2\\3"))), "info",
         ("RS.dcm", "ROINumber", "Lung_L")),
    Case("rs_other_frame_of_reference", _object("RS.dcm", _other_frame), "dvh", ("RS.dcm", "FrameOfReferenceUID")),
    Case("rs_no_rois", _object("RS.dcm", _set("StructureSetROISequence", "SQ", [])), "info",
         ("RS.dcm", "StructureSetROISequence")),
    Case("rs_missing", _delete("RS.dcm"), "dvh", ("RTSTRUCT", "no RT Structure Set"), input_defect=False),
    Case("rs_compare_nan_contour", _object("RS.dcm", _first_contour(_nan_contour)), "compare",
         ("RS.dcm", "ContourData", "Heart")),
    # ---------------------------------------------------------------- RT Dose
    Case("rd_no_dose_grid_scaling", _object("RD.dcm", _drop("DoseGridScaling")), "dvh", ("RD.dcm", "DoseGridScaling")),
    Case("rd_negative_values", _object("RD.dcm", _negative_dose), "info", ("RD.dcm", "negative")),
    Case("rd_relative_without_prescription", _object("RD.dcm", _set("DoseUnits", "CS", "RELATIVE")), "dvh",
         ("RD.dcm", "DoseUnits", "prescription")),
    Case("rd_unknown_units", _object("RD.dcm", _set("DoseUnits", "CS", "CGY")), "info", ("RD.dcm", "DoseUnits")),
    Case("rd_rows_65535", _object("RD.dcm", _set("Rows", "US", 65535)), "info", ("RD.dcm", "Rows")),
    Case("rd_frames_exceed_pixel_data", _object("RD.dcm", _more_frames), "info", ("RD.dcm", "PixelData")),
    Case("rd_frame_offsets_missing_one", _object("RD.dcm", _offsets_missing_one), "info",
         ("RD.dcm", "GridFrameOffsetVector")),
    Case("rd_frame_offsets_irregular", _object("RD.dcm", _offsets_irregular), "dvh",
         ("RD.dcm", "GridFrameOffsetVector")),
    Case("rd_not_overlapping_ct", _object("RD.dcm", _shift_dose), "dvh", ("RD.dcm", "does not overlap")),
    Case("rd_other_frame_of_reference", _object("RD.dcm", _other_frame), "dvh", ("RD.dcm", "FrameOfReferenceUID")),
    Case("rd_truncated", _cut("RD.dcm", 0.5), "info", ("RD.dcm", "truncated")),
    Case("rd_pixel_spacing_zero", _object("RD.dcm", _set("PixelSpacing", "DS", "0\\0")), "info",
         ("RD.dcm", "PixelSpacing")),
    Case("rd_missing", _delete("RD.dcm"), "dvh", ("RTDOSE", "no RT Dose"), input_defect=False),
    Case("crop_rd_no_dose_grid_scaling", _object("RD.dcm", _drop("DoseGridScaling")), "crop",
         ("RD.dcm", "DoseGridScaling")),
    Case("crop_two_series_without_uid", _second_series, "crop", ("--series-uid", "SeriesInstanceUID"),
         input_defect=False),
    Case("segment_ct_no_rescale_intercept", _one_ct(_drop("RescaleIntercept")), "segment",
         ("CT_0011.dcm", "RescaleIntercept")),
    Case("validate_symlink_loop", _symlink_loop, "validate", ("loop", "symbolic link loop")),
    Case("rd_predict_no_scaling", _object("RD.dcm", _drop("DoseGridScaling")), "predict", ("RD.dcm", "DoseGridScaling")),
    # ---------------------------------------------------------------- RT Plan
    Case("rp_fractions_as_text", _fractions_as_text, "info", ("RP.dcm", "NumberOfFractionsPlanned")),
    Case("rp_truncated", _cut("RP.dcm", 0.5), "dvh", ("RP.dcm", "truncated")),
    # ---------------------------------------------------------------- outputs
    Case("out_dvh_png_exists", _existing_output("dvh.png"), "dvh", ("dvh.png", "exists"), input_defect=False),
    Case("out_compare_png_exists", _existing_output("coronal.png"), "compare", ("coronal.png", "exists"),
         input_defect=False),
    Case("out_predict_png_exists", _existing_output("pneumonitis_saliency.png"), "predict",
         ("pneumonitis_saliency.png", "exists"), input_defect=False),
    Case("out_segment_labels_exist", _existing_output("labels.thorax_atlas.nii.gz"), "segment",
         ("labels.thorax_atlas.nii.gz", "exists"), input_defect=False, extra_args=("--nifti",)),
    Case("out_is_a_file", _output_is_file, "dvh", ("out", "is a file"), input_defect=False),
    Case("out_unwritable", _output_unwritable, "dvh", ("out", "cannot write"), input_defect=False, unreadable=True),
]


def _rle(study: Path, _out: Path) -> None:
    for path in ct_files(study):
        edit(path, lambda ds: ds.compress(RLELossless))


def _eight_bit(study: Path, _out: Path) -> None:
    def change(ds: pydicom.Dataset) -> None:
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ds.PixelData = np.clip(np.round((hu + 1024.0) / 16.0), 0, 255).astype(np.uint8).tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.RescaleSlope, ds.RescaleIntercept = 16, -1024
        ds["PixelData"].VR = "OB"
    for path in ct_files(study):
        edit(path, change)


def _readme(study: Path, _out: Path) -> None:
    (study / "README.txt").write_text("exported by hand\n")


#: valid variants: (name, build, command, extra args); they must succeed
VALID_CASES: list[tuple[str, Callable[[Path, Path], None], str]] = [
    ("valid_rle_ct", _rle, "info"),
    ("valid_8bit_ct", _eight_bit, "dvh"),
    ("valid_non_dicom_file_beside", _readme, "dvh"),
    ("valid_two_series_with_uid", _second_series, "dvh"),
    ("valid_two_series_crop_with_uid", _second_series, "crop"),
]
