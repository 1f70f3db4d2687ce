"""Tests of the DICOM RT readers (scan, CT, RTSTRUCT, RTDOSE, RTPLAN, study).

Inputs are (1) small synthetic objects written here with pydicom alone (helpers below, independent
of rtdeep's own writers, so every tag is chosen by the test), (2) real files no one here wrote:
../shared/data/real-dicom (MIM RTSTRUCT on a GE CT, an oblique CT) and pydicom's bundled
rtdose/rtplan/rtstruct/CT_small files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import hash_tree
from matplotlib.path import Path as MplPath
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from scipy import ndimage

from rtdeep.dicomrt.ct_reader import read_ct_series, slice_pixels
from rtdeep.dicomrt.rasterize import rasterize_planes
from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
from rtdeep.dicomrt.rtplan_reader import read_rtplan
from rtdeep.dicomrt.rtstruct_reader import rasterize_slice, read_rtstruct
from rtdeep.dicomrt.scan import scan_folder
from rtdeep.dicomrt.study import load_study
from rtdeep.dicomrt.types import CtSeries, DoseGrid, PatientInfo
from rtdeep.errors import (
    DicomReadError,
    DoseError,
    FrameOfReferenceError,
    GeometryError,
    SeriesError,
    StructureError,
)
from rtdeep.volume import Volume

# ---------------------------------------------------------------- synthetic objects (pydicom only)

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
RS_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
RD_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
RP_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"


def axial_affine(origin=(-10.0, -20.0, 30.0), spacing=(1.0, 1.0, 2.0)) -> np.ndarray:
    """Index-to-LPS affine of an axial grid; spacing along (i, j, k)."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _base(sop_class: str, modality: str, study_uid: str, frame_uid: str, series_uid: str,
          implicit: bool = False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = "Synth^Reader"
    ds.PatientID = "SYNTH01"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyID = "1"
    ds.SeriesInstanceUID = series_uid
    if frame_uid:
        ds.FrameOfReferenceUID = frame_uid
    return ds


def write_ct(
    folder: Path,
    stored: np.ndarray,
    affine: np.ndarray,
    *,
    frame_uid: str | None = None,
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    names: Callable[[int], str] = lambda k: f"CT_{k:03d}.dcm",
    description: str = "synthetic",
    positions: np.ndarray | None = None,
    implicit: bool = False,
) -> list[Path]:
    """Write ``stored`` int16 values ``[k, j, i]`` as one CT file per slice; returns paths in k order.

    ``positions`` (n, 3) overrides the ImagePositionPatient of each slice (for tilt / gap tests).
    SliceLocation is written deliberately wrong (the reverse order) so a reader that trusts it fails.
    """
    folder.mkdir(parents=True, exist_ok=True)
    frame_uid = frame_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    n_k, rows, cols = stored.shape
    row_dir = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    col_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    slopes = np.broadcast_to(np.asarray(slope, dtype=float), (n_k,))
    intercepts = np.broadcast_to(np.asarray(intercept, dtype=float), (n_k,))
    paths = []
    for k in range(n_k):
        ds = _base(CT_CLASS, "CT", study_uid, frame_uid, series_uid, implicit)
        position = affine[:3, 3] + k * affine[:3, 2] if positions is None else positions[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{np.linalg.norm(affine[:3, 1]):.6f}", f"{np.linalg.norm(affine[:3, 0]):.6f}"]
        ds.SliceThickness = f"{np.linalg.norm(affine[:3, 2]):.6f}"
        ds.SliceLocation = str(float(n_k - k))
        ds.InstanceNumber = n_k - k
        ds.SeriesDescription = description
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = f"{slopes[k]:g}"
        ds.RescaleIntercept = f"{intercepts[k]:g}"
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        path = folder / names(k)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def contour_item(points_lps: np.ndarray, kind: str = "CLOSED_PLANAR") -> Dataset:
    item = Dataset()
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points_lps)
    item.ContourData = [f"{v:.4f}" for v in np.asarray(points_lps, dtype=float).ravel()]
    return item


def write_rtstruct(
    path: Path,
    frame_uid: str,
    rois: Sequence[tuple[str, int, Sequence[Dataset]]],
    *,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    referenced_series_uid: str = "",
    colors: dict[str, tuple[int, int, int]] | None = None,
    interpreted: str = "ORGAN",
) -> Path:
    """An RTSTRUCT with ROIs ``(name, number, contour items)``; contour items from :func:`contour_item`."""
    ds = _base(RS_CLASS, "RTSTRUCT", study_uid, "", generate_uid())
    ds.StructureSetLabel = "SYNTH"
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    if referenced_series_uid:
        series = Dataset()
        series.SeriesInstanceUID = referenced_series_uid
        study = Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = study_uid
        study.RTReferencedSeriesSequence = DicomSequence([series])
        frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    definitions, contours, observations = [], [], []
    for name, number, items in rois:
        definition = Dataset()
        definition.ROINumber = number
        definition.ReferencedFrameOfReferenceUID = frame_uid
        definition.ROIName = name
        definition.ROIGenerationAlgorithm = "MANUAL"
        definitions.append(definition)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = list((colors or {}).get(name, (10, 20, 30)))
        if items:
            roi_contour.ContourSequence = DicomSequence(list(items))
        contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = interpreted
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(definitions)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rtdose(
    path: Path,
    dose_gy: np.ndarray,
    affine: np.ndarray,
    frame_uid: str,
    *,
    absolute_offsets: bool = False,
    units: str = "GY",
    scaling: float = 1e-4,
    plan_uid: str = "",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    summation: str = "PLAN",
) -> Path:
    """A multi-frame RTDOSE (uint32, DoseGridScaling) of ``dose_gy [k, j, i]`` on an axis-aligned affine."""
    ds = _base(RD_CLASS, "RTDOSE", study_uid, frame_uid, generate_uid())
    n_k, rows, cols = dose_gy.shape
    ds.ImagePositionPatient = [f"{v:.6f}" for v in affine[:3, 3]]
    row_dir = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    col_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{np.linalg.norm(affine[:3, 1]):.6f}", f"{np.linalg.norm(affine[:3, 0]):.6f}"]
    gap = float(np.linalg.norm(affine[:3, 2])) * np.sign(affine[2, 2] or 1.0)
    offsets = np.arange(n_k) * gap + (affine[2, 3] if absolute_offsets else 0.0)
    ds.GridFrameOffsetVector = [f"{v:.6f}" for v in offsets]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = n_k
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseGridScaling = f"{scaling:g}"
    if plan_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RP_CLASS
        ref.ReferencedSOPInstanceUID = plan_uid
        ds.ReferencedRTPlanSequence = DicomSequence([ref])
    ds.PixelData = np.round(dose_gy / scaling).astype("<u4").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rtplan(
    path: Path,
    frame_uid: str,
    *,
    structure_set_uid: str = "",
    gantry_angles: Sequence[Sequence[float]] = ((0.0,), (180.0, 90.0, 0.0)),
    beam_dose_gy: float | None = 1.0,
    prescription_gy: float | None = None,
    fractions: int = 30,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
) -> Path:
    """An RTPLAN with one beam per entry of ``gantry_angles`` (several angles = an arc)."""
    ds = _base(RP_CLASS, "RTPLAN", study_uid, frame_uid, generate_uid())
    ds.RTPlanLabel = "SYNTHPLAN"
    ds.RTPlanGeometry = "PATIENT"
    if prescription_gy is not None:
        ref = Dataset()
        ref.DoseReferenceNumber = 1
        ref.DoseReferenceStructureType = "SITE"
        ref.DoseReferenceType = "TARGET"
        ref.TargetPrescriptionDose = f"{prescription_gy:g}"
        ds.DoseReferenceSequence = DicomSequence([ref])
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = fractions
    group.NumberOfBeams = len(gantry_angles)
    refs, beams = [], []
    for number, angles in enumerate(gantry_angles, start=1):
        ref = Dataset()
        ref.ReferencedBeamNumber = number
        ref.BeamMeterset = f"{100.0 * number:g}"
        if beam_dose_gy is not None:
            ref.BeamDose = f"{beam_dose_gy:g}"
        refs.append(ref)
        beam = Dataset()
        beam.BeamNumber = number
        beam.BeamName = f"B{number}"
        beam.RadiationType = "PHOTON"
        beam.BeamType = "DYNAMIC" if len(angles) > 1 else "STATIC"
        points = []
        for index, angle in enumerate(angles):
            point = Dataset()
            point.ControlPointIndex = index
            point.GantryAngle = f"{angle:g}"
            if index == 0:
                point.NominalBeamEnergy = "6"
                point.IsocenterPosition = ["1.5", "-2.5", "30"]
                point.BeamLimitingDeviceAngle = "10"
                point.PatientSupportAngle = "0"
            points.append(point)
        beam.ControlPointSequence = DicomSequence(points)
        beam.NumberOfControlPoints = len(points)
        beams.append(beam)
    group.ReferencedBeamSequence = DicomSequence(refs)
    ds.FractionGroupSequence = DicomSequence([group])
    ds.BeamSequence = DicomSequence(beams)
    if structure_set_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RS_CLASS
        ref.ReferencedSOPInstanceUID = structure_set_uid
        ds.ReferencedStructureSetSequence = DicomSequence([ref])
    ds.save_as(path, enforce_file_format=True)
    return path


def index_to_lps(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def square_ij(i0: float, j0: float, i1: float, j1: float, clockwise: bool = False) -> np.ndarray:
    """Corners of an index-space rectangle, in one winding or the other."""
    corners = np.array([[i0, j0], [i1, j0], [i1, j1], [i0, j1]], dtype=float)
    return corners[::-1] if clockwise else corners


def ij_contour(affine: np.ndarray, polygon_ij: np.ndarray, k: float) -> Dataset:
    """A CLOSED_PLANAR contour item from an index-space polygon on slice ``k``."""
    ijk = np.column_stack([polygon_ij, np.full(len(polygon_ij), float(k))])
    return contour_item(index_to_lps(affine, ijk))


def oblique_affine(spacing=(0.9, 1.3, 2.2), origin=(12.0, -30.0, 45.0)) -> np.ndarray:
    """A rotated (non-axial) grid: rotation about an arbitrary axis, then scaling."""
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    angle = np.radians(27.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin
    return affine


def stored_values(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-300, 2500, shape).astype(np.int16)


# ---------------------------------------------------------------- scan_folder


def test_scan_folder_finds_objects_and_skips_bad_files(tmp_path):
    affine = axial_affine()
    write_ct(tmp_path / "ct", stored_values((3, 6, 5)), affine)
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rs_no_preamble.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), tmp_path / "plan.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM at all\n" * 20)
    before = hash_tree(tmp_path)

    infos, skipped = scan_folder(tmp_path)

    modalities = sorted(info.modality for info in infos)
    assert modalities == ["CT", "CT", "CT", "RTPLAN", "RTSTRUCT"]
    structure = next(info for info in infos if info.modality == "RTSTRUCT")
    assert structure.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2"
    plan = next(info for info in infos if info.modality == "RTPLAN")
    assert "1.2.333.444.55.6.7777.88888" in plan.referenced_uids
    assert len(skipped) == 1
    assert any("notes.txt" in w and "not a DICOM file" in w for w in skipped)
    assert hash_tree(tmp_path) == before


def test_scan_folder_refuses_truncated_dicom_files(tmp_path):
    """A truncated DICOM file is an error naming it (skipping it would give a wrong study), not a warning."""
    whole = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    (tmp_path / "plan_cut.dcm").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DicomReadError, match=r"plan_cut\.dcm.*truncated"):
        scan_folder(tmp_path)
    (tmp_path / "plan_cut.dcm").unlink()
    write_ct(tmp_path / "ct", stored_values((3, 6, 5)), axial_affine())
    whole = (tmp_path / "ct" / "CT_000.dcm").read_bytes()
    (tmp_path / "ct" / "CT_000.dcm").write_bytes(whole[:-20])
    with pytest.raises(DicomReadError, match=r"CT_000\.dcm: tag PixelData \(7FE0,0010\): truncated"):
        scan_folder(tmp_path)


# ---------------------------------------------------------------- CT series


def test_ct_order_rescale_and_affine_from_ipp_not_slicelocation(tmp_path):
    stored = stored_values((5, 7, 6))
    slopes = [1.0, 2.0, 0.5, 1.0, 1.0]
    intercepts = [-1024.0, -1000.0, 0.0, -1024.0, 7.0]
    order = [3, 0, 4, 1, 2]  # file names sort in a different order than positions
    paths = write_ct(tmp_path, stored, axial_affine(spacing=(0.7, 0.9, 2.5)), slope=slopes,
                     intercept=intercepts, names=lambda k: f"IMG{order[k]}.dcm")

    ct = read_ct_series(tmp_path)

    expected = stored.astype(np.float32) * np.asarray(slopes, np.float32)[:, None, None] + np.asarray(
        intercepts, np.float32)[:, None, None]
    assert ct.volume.array.dtype == np.float32
    np.testing.assert_array_equal(ct.volume.array, expected)
    np.testing.assert_allclose(ct.volume.affine, axial_affine(spacing=(0.7, 0.9, 2.5)), atol=1e-6)
    assert ct.files == paths
    assert ct.sop_instance_uids == [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    assert ct.patient.patient_id == "SYNTH01" and ct.patient.patient_birth_date == "19700101"
    assert ct.series_description == "synthetic"
    assert ct.warnings == []


def test_ct_from_shuffled_file_list_matches_folder(tmp_path):
    paths = write_ct(tmp_path, stored_values((4, 5, 5)), axial_affine())
    shuffled = [paths[2], paths[0], paths[3], paths[1]]
    from_list = read_ct_series(shuffled)
    from_folder = read_ct_series(tmp_path)
    assert from_list.files == paths
    np.testing.assert_array_equal(from_list.volume.array, from_folder.volume.array)


def test_ct_oblique_matches_simpleitk(tmp_path):
    import SimpleITK as sitk
    affine = oblique_affine()
    stored = stored_values((4, 9, 7), seed=3)
    paths = write_ct(tmp_path, stored, affine)

    ct = read_ct_series(tmp_path)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in paths])
    image = reader.Execute()
    np.testing.assert_allclose(ct.volume.array, sitk.GetArrayFromImage(image), atol=1e-4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(ct.volume.affine[:3, :3], direction * np.array(image.GetSpacing()), atol=1e-5)
    np.testing.assert_allclose(ct.volume.origin_lps, image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(ct.volume.affine, affine, atol=1e-5)


def test_ct_missing_slice_names_gap(tmp_path):
    paths = write_ct(tmp_path, stored_values((6, 4, 4)), axial_affine(origin=(0, 0, 10.0), spacing=(1, 1, 2)))
    paths[3].unlink()
    with pytest.raises(SeriesError, match=r"missing slices.*14\.00 to 18\.00 mm"):
        read_ct_series(tmp_path)


def test_ct_several_series_listed_then_chosen(tmp_path):
    write_ct(tmp_path, stored_values((3, 4, 4)), axial_affine(), series_uid="1.2.3.100", description="first",
             names=lambda k: f"a{k}.dcm")
    write_ct(tmp_path, stored_values((5, 4, 4)), axial_affine(), series_uid="1.2.3.200", description="second",
             names=lambda k: f"b{k}.dcm")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(SeriesError) as error:
        read_ct_series(tmp_path)
    message = str(error.value)
    assert "1.2.3.100 ('first', 3 slices)" in message and "1.2.3.200 ('second', 5 slices)" in message

    ct = read_ct_series(tmp_path, series_instance_uid="1.2.3.200")
    assert ct.volume.shape == (5, 4, 4) and ct.series_instance_uid == "1.2.3.200"
    assert any("readme.txt" in w for w in ct.warnings)
    with pytest.raises(SeriesError, match="1.2.3.999 not found"):
        read_ct_series(tmp_path, series_instance_uid="1.2.3.999")


def test_ct_mixed_orientation_and_size_name_the_file(tmp_path):
    paths = write_ct(tmp_path / "orient", stored_values((4, 5, 5)), axial_affine())
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    ds.save_as(paths[2])
    with pytest.raises(GeometryError, match=rf"mixed orientations.*{paths[2].name}"):
        read_ct_series(tmp_path / "orient")

    series = generate_uid()
    frame = generate_uid()
    write_ct(tmp_path / "size", stored_values((3, 5, 5)), axial_affine(), series_uid=series, frame_uid=frame)
    odd = axial_affine()
    odd[:3, 3] += odd[:3, 2] * 3
    write_ct(tmp_path / "size", stored_values((1, 6, 5)), odd, series_uid=series, frame_uid=frame,
             names=lambda k: "odd.dcm")
    with pytest.raises(GeometryError, match=r"mixed slice sizes.*odd\.dcm"):
        read_ct_series(tmp_path / "size")


def test_ct_gantry_tilt_duplicates_and_uneven_spacing(tmp_path):
    affine = axial_affine(origin=(0, 0, 0), spacing=(1, 1, 2))
    tilted = np.array([[0, 0.5 * k, 2.0 * k] for k in range(4)])
    write_ct(tmp_path / "tilt", stored_values((4, 4, 4)), affine, positions=tilted)
    with pytest.raises(GeometryError, match="gantry tilt"):
        read_ct_series(tmp_path / "tilt")

    duplicated = np.array([[0, 0, z] for z in (0.0, 2.0, 2.0, 4.0)])
    write_ct(tmp_path / "dup", stored_values((4, 4, 4)), affine, positions=duplicated)
    with pytest.raises(SeriesError, match=r"duplicated slice position 2\.000"):
        read_ct_series(tmp_path / "dup")

    uneven = np.array([[0, 0, z] for z in (0.0, 2.0, 4.2, 6.0, 8.0)])
    write_ct(tmp_path / "uneven", stored_values((5, 4, 4)), affine, positions=uneven)
    ct = read_ct_series(tmp_path / "uneven")
    assert any("uneven slice spacing" in w for w in ct.warnings)
    assert ct.volume.affine[2, 2] == pytest.approx(2.0)

    # 2 mm slices through the middle, 3 mm above and below: the mean grid (2.571 mm) puts slice 5 0.86 mm off
    variable = np.array([[0, 0, z] for z in (0.0, 3.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0)])
    write_ct(tmp_path / "variable", stored_values((8, 4, 4)), affine, positions=variable)
    with pytest.raises(SeriesError, match=r"uneven slice spacing \(2\.000 to 3\.000 mm.*CT_005\.dcm lies 0\.86 mm") as error:
        read_ct_series(tmp_path / "variable")
    assert "ImagePositionPatient (0020,0032)" in str(error.value)


def test_ct_truncated_pixel_data_names_file_and_tag(tmp_path):
    paths = write_ct(tmp_path, stored_values((3, 8, 8)), axial_affine())
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-40])
    with pytest.raises(DicomReadError) as error:
        read_ct_series(tmp_path)
    assert paths[1].name in str(error.value) and "PixelData (7FE0,0010)" in str(error.value)


def test_ct_pixels_compressed_fallback_and_bits_stored(tmp_path):
    rle = Path(get_testdata_file("MR_small_RLE.dcm"))
    plain = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(slice_pixels(rle, pydicom.dcmread(rle), 64, 64), plain)

    values = np.arange(48, dtype=np.uint16).reshape(1, 6, 8) * 80
    path = write_ct(tmp_path, values.astype(np.int16), axial_affine(), intercept=0.0)[0]
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = (values[0] | 0xF000).astype("<u2").tobytes()  # junk in the unused high bits
    ds.save_as(path)
    np.testing.assert_array_equal(read_ct_series([path]).volume.array[0], values[0])


def test_ct_real_oblique_orders_by_position(real_dicom_dir):
    folder = real_dicom_dir / "oblique-ct"
    before = hash_tree(folder)
    files = [folder / "2.dcm", folder / "0.dcm", folder / "1.dcm"]
    ct = read_ct_series(files)
    headers = [pydicom.dcmread(p) for p in ct.files]
    orientation = np.array(headers[0].ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose(ct.volume.direction[:, 0], orientation[:3], atol=1e-6)
    np.testing.assert_allclose(ct.volume.direction[:, 1], orientation[3:], atol=1e-6)
    normal = np.cross(orientation[:3], orientation[3:])
    along = [np.array(h.ImagePositionPatient, dtype=float) @ normal for h in headers]
    assert along == sorted(along) and len(set(along)) == 3
    np.testing.assert_allclose(ct.volume.spacing_mm[:2], [2.5, 3.5])
    np.testing.assert_allclose(ct.volume.origin_lps, headers[0].ImagePositionPatient, atol=1e-6)
    stored = np.frombuffer(headers[0].PixelData, "<i2").reshape(50, 100)
    np.testing.assert_allclose(ct.volume.array[0], stored * 0.001, atol=1e-6)
    assert hash_tree(folder) == before


# ---------------------------------------------------------------- rasterisation


def test_rasterize_slice_even_odd_against_matplotlib():
    rng = np.random.default_rng(7)
    jj, ii = np.mgrid[0:40, 0:40]
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    for trial in range(40):
        n = int(rng.integers(3, 25))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(3, 18, n)
        star = np.column_stack([20 + radii * np.cos(angles), 20 + radii * np.sin(angles)]) + rng.uniform(0, 1, 2)
        tangle = rng.uniform(-5, 45, (6, 2))  # self-intersecting, partly outside the grid
        polygons = [star[::-1] if trial % 2 else star, tangle]
        mask = rasterize_slice(polygons, 40, 40)
        expected = (MplPath(polygons[0]).contains_points(centres)
                    ^ MplPath(polygons[1]).contains_points(centres)).reshape(40, 40)
        differ = np.argwhere(mask != expected)
        for j, i in differ:  # only centres lying on an edge (within 0.01 px along the row) may differ
            assert _row_distance_to_edges(polygons, i, j) < 0.011


def _row_distance_to_edges(polygons, i, j):
    best = np.inf
    for polygon in polygons:
        for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
            if min(y0, y1) <= j <= max(y0, y1) and y0 != y1:
                best = min(best, abs(x0 + (j - y0) * (x1 - x0) / (y1 - y0) - i))
    return best


def test_rasterize_contours_through_voxel_centres_keep_boundary():
    square = square_ij(2, 2, 5, 5).astype(float)
    mask = rasterize_slice([square], 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    planes = rasterize_planes([square_ij(0.5, 0.5, 3.5, 2.5)], [2], 3, 4, 5)
    assert planes[2].sum() == 6 and planes[:2].sum() == 0


# ---------------------------------------------------------------- RTSTRUCT


@pytest.fixture
def small_ct(tmp_path) -> tuple[CtSeries, Path, np.ndarray]:
    affine = axial_affine(origin=(-11.0, 4.0, -20.0), spacing=(0.8, 1.2, 2.5))
    frame = "1.2.826.0.1.3680043.8.498.77"
    write_ct(tmp_path / "ct", stored_values((4, 24, 24)), affine, frame_uid=frame)
    return read_ct_series(tmp_path / "ct"), tmp_path, affine


def test_rtstruct_even_odd_holes_islands_and_warnings(small_ct):
    ct, folder, affine = small_ct
    rois = [
        ("Ring", 1, [ij_contour(affine, square_ij(2.5, 3.5, 12.5, 13.5), 1),
                     ij_contour(affine, square_ij(5.5, 6.5, 8.5, 9.5), 1),  # hole, same winding
                     ij_contour(affine, square_ij(2.5, 3.5, 12.5, 13.5), 2),
                     ij_contour(affine, square_ij(5.5, 6.5, 8.5, 9.5, clockwise=True), 2)]),
        ("Islands", 2, [ij_contour(affine, square_ij(14.5, 2.5, 18.5, 6.5, clockwise=True), 1),
                        ij_contour(affine, square_ij(14.5, 10.5, 18.5, 14.5), 1)]),
        ("Overlap", 3, [ij_contour(affine, square_ij(2.5, 15.5, 6.5, 19.5), 3),
                        ij_contour(affine, square_ij(4.5, 15.5, 8.5, 19.5), 3)]),
        ("OffGrid", 4, [ij_contour(affine, square_ij(1.5, 1.5, 3.5, 3.5), 0),
                        ij_contour(affine, square_ij(1.5, 1.5, 3.5, 3.5), 7)]),
        ("Empty", 5, []),
        ("TwoPoints", 6, [contour_item(index_to_lps(affine, [[1, 1, 1], [5, 5, 1]]))]),
        ("Marker", 7, [contour_item(index_to_lps(affine, [[4, 4, 2]]), kind="POINT")]),
    ]
    path = write_rtstruct(folder / "rs.dcm", ct.frame_of_reference_uid, rois, colors={"Ring": (1, 2, 3)})

    structures = read_rtstruct(path, ct)

    assert structures.names() == ["Ring", "Islands", "Overlap", "OffGrid", "Empty", "TwoPoints", "Marker"]
    ring = np.zeros(ct.volume.shape, bool)
    ring[1:3, 4:14, 3:13] = True
    ring[1:3, 7:10, 6:9] = False
    np.testing.assert_array_equal(structures["Ring"].mask, ring)
    islands = np.zeros(ct.volume.shape, bool)
    islands[1, 3:7, 15:19] = True
    islands[1, 11:15, 15:19] = True
    np.testing.assert_array_equal(structures["Islands"].mask, islands)
    overlap = np.zeros(ct.volume.shape, bool)
    overlap[3, 16:20, 3:5] = True
    overlap[3, 16:20, 7:9] = True
    np.testing.assert_array_equal(structures["Overlap"].mask, overlap)
    assert structures["OffGrid"].mask.sum() == 4 and structures["OffGrid"].mask[0].sum() == 4
    for name in ("Empty", "TwoPoints", "Marker"):
        assert not structures[name].mask.any()
    assert structures["Ring"].color_rgb == (1, 2, 3) and structures["Islands"].number == 2
    assert structures["Ring"].interpreted_type == "ORGAN" and structures["Ring"].generation_algorithm == "MANUAL"
    assert structures["Ring"].volume_cc(ct.volume) == pytest.approx(ring.sum() * 0.8 * 1.2 * 2.5 / 1000)

    warnings = "\n".join(structures.warnings)
    off_grid_z = -20.0 + 7 * 2.5
    assert f"ROI 'OffGrid': 1 contour(s) on slices the CT lacks (at {off_grid_z:.2f} mm" in warnings
    assert "ROI 'Empty': empty ROI" in warnings
    assert "ROI 'TwoPoints': CLOSED_PLANAR contour with 2 point(s)" in warnings
    assert "ROI 'Marker': POINT contour" in warnings
    assert all("rs.dcm" in w for w in structures.warnings)


def test_rtstruct_on_oblique_grid(tmp_path):
    affine = oblique_affine()
    write_ct(tmp_path / "ct", stored_values((3, 20, 16)), affine, frame_uid="1.2.3.4.5")
    ct = read_ct_series(tmp_path / "ct")
    path = write_rtstruct(tmp_path / "rs.dcm", "1.2.3.4.5",
                          [("Box", 1, [ij_contour(affine, square_ij(3.5, 4.5, 9.5, 14.5), 1)])])
    mask = read_rtstruct(path, ct)["Box"].mask
    expected = np.zeros(ct.volume.shape, bool)
    expected[1, 5:15, 4:10] = True
    np.testing.assert_array_equal(mask, expected)


def test_rtstruct_other_frame_of_reference_and_unknown_roi(small_ct):
    ct, folder, affine = small_ct
    other = write_rtstruct(folder / "other.dcm", "1.2.826.0.1.3680043.8.498.99",
                           [("Box", 1, [ij_contour(affine, square_ij(1.5, 1.5, 4.5, 4.5), 1)])])
    with pytest.raises(FrameOfReferenceError) as error:
        read_rtstruct(other, ct)
    message = str(error.value)
    assert "other.dcm" in message and "1.2.826.0.1.3680043.8.498.99" in message
    assert ct.frame_of_reference_uid in message

    good = write_rtstruct(folder / "good.dcm", ct.frame_of_reference_uid,
                          [("Box", 1, [ij_contour(affine, square_ij(1.5, 1.5, 4.5, 4.5), 1)])])
    with pytest.raises(StructureError, match=r"good\.dcm.*'Heart'.*not found; available: 'Box'"):
        read_rtstruct(good, ct, roi_names=["Heart"])
    assert read_rtstruct(good, ct, roi_names=["Box"])["Box"].mask.sum() == 9


def test_rtstruct_real_mim_on_ge_ct_with_missing_slices(real_dicom_dir):
    folder = real_dicom_dir / "mim-rtstruct-ge-ct"
    before = hash_tree(folder)
    ct = read_ct_series(folder)
    structures = read_rtstruct(folder / "RS_MIM.dcm", ct)
    assert structures.names() == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]
    assert structures["ROI-1"].color_rgb == (255, 0, 255)
    for name in structures.names():
        assert any(f"ROI '{name}'" in w and "lacks" in w and "70.00" in w for w in structures.warnings)
    # MIM draws contours along pixel edges: voxel counts equal the polygon areas (in pixels)
    dataset = pydicom.dcmread(folder / "RS_MIM.dcm")
    spacing = ct.volume.spacing_mm
    checked = 0
    for roi_contour, roi in zip(dataset.ROIContourSequence, structures.rois, strict=True):
        assert roi.mask.any(axis=(1, 2)).all()
        for contour in roi_contour.ContourSequence:
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
            k = round((points[0, 2] - ct.volume.origin_lps[2]) / spacing[2])
            if not 0 <= k < ct.volume.shape[0]:
                continue
            x, y = points[:, 0], points[:, 1]
            area_px = 0.5 * abs(x @ np.roll(y, 1) - y @ np.roll(x, 1)) / (spacing[0] * spacing[1])
            assert abs(roi.mask[k].sum() - area_px) < 1.0
            checked += 1
    assert checked == 8
    assert hash_tree(folder) == before


def test_rtstruct_pydicom_file_without_preamble(tmp_path):
    frame = "1.2.826.0.1.3680043.8.498.2010020400001.2"
    affine = axial_affine(origin=(-250.0, -250.0, -200.0), spacing=(10.0, 10.0, 10.0))
    write_ct(tmp_path / "ct", stored_values((3, 50, 50)), affine, frame_uid=frame)
    ct = read_ct_series(tmp_path / "ct")
    structures = read_rtstruct(get_testdata_file("rtstruct.dcm"), ct)
    patient = structures["patient"]
    # rectangle x -200..200, y -150..150 mm drawn through voxel centres: the boundary counts as inside
    assert patient.mask.sum(axis=(1, 2)).tolist() == [41 * 31] * 3
    assert patient.interpreted_type == "EXTERNAL" and patient.color_rgb == (220, 160, 120)
    assert any("ROI 'Isocenter 1': POINT" in w for w in structures.warnings)


# ---------------------------------------------------------------- RTDOSE


def linear_dose(lps: np.ndarray) -> np.ndarray:
    return 20.0 + 0.1 * lps[..., 0] - 0.2 * lps[..., 1] + 0.05 * lps[..., 2]


def dose_on_grid(affine: np.ndarray, shape) -> np.ndarray:
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return linear_dose(index_to_lps(affine, np.stack([ii, jj, kk], axis=-1)))


def test_rtdose_pydicom_relative_refused_then_scaled():
    path = get_testdata_file("rtdose.dcm")
    with pytest.raises(DoseError) as error:
        read_rtdose(path)
    assert "DoseUnits (3004,0002)" in str(error.value) and "rtdose.dcm" in str(error.value)
    dose = read_rtdose(path, prescription_gy=60.0)
    assert dose.dose.shape == (15, 10, 10)
    stored = pydicom.dcmread(path).pixel_array
    np.testing.assert_allclose(dose.dose.array, stored * 1e-6 * 60.0, rtol=1e-6)
    np.testing.assert_allclose(dose.dose.affine, [[10, 0, 0, 189.43125], [0, 10, 0, 199.43125],
                                                  [0, 0, 5, -761.87], [0, 0, 0, 1]])
    assert dose.summation_type == "BEAM"


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("descending", [False, True])
def test_rtdose_frame_offsets_relative_absolute_descending(tmp_path, absolute, descending):
    affine = axial_affine(origin=(-5.0, 3.0, 12.0), spacing=(2.0, 2.5, 3.0))
    if descending:
        affine[2, 2] = -3.0
    values = dose_on_grid(affine, (5, 4, 6))
    path = write_rtdose(tmp_path / "rd.dcm", values, affine, "1.2.3", absolute_offsets=absolute)
    dose = read_rtdose(path)
    assert dose.dose.affine[2, 2] == pytest.approx(3.0)
    np.testing.assert_allclose(dose.dose.array, dose_on_grid(dose.dose.affine, (5, 4, 6)), atol=1e-3)


def test_resample_dose_trilinear_axis_aligned_and_oblique(tmp_path):
    dose_affine = axial_affine(origin=(-20.0, -20.0, -10.0), spacing=(2.5, 2.5, 3.0))
    path = write_rtdose(tmp_path / "rd.dcm", dose_on_grid(dose_affine, (9, 17, 17)), dose_affine, "1.2.3")
    dose = read_rtdose(path)
    for ct_affine in (axial_affine(origin=(-30.0, -17.3, -14.0), spacing=(1.1, 1.3, 2.0)),
                      oblique_affine(spacing=(1.1, 1.3, 2.0), origin=(-12.0, -8.0, -6.0))):
        ct = CtSeries(Volume(np.zeros((12, 30, 40), np.float32), ct_affine), [], "", "1.2.3", PatientInfo())
        on_ct = resample_dose(dose, ct)
        assert on_ct.same_grid(ct.volume)
        inside = _inside(dose.dose, ct.volume, margin=1e-6)
        # the one edge rule (rtdeep.resample): up to half a dose voxel beyond the edge voxel centres
        # a CT voxel takes the edge value; farther out it gets 0
        edge_band = ~_inside(dose.dose, ct.volume, margin=-1e-6) & _inside(dose.dose, ct.volume, margin=-0.49)
        outside = ~_inside(dose.dose, ct.volume, margin=-0.51)
        assert inside.any() and outside.any() and edge_band.any()
        expected = dose_on_grid(ct_affine, ct.volume.shape)
        np.testing.assert_allclose(on_ct.array[inside], expected[inside], atol=2e-3)
        clamped = _clamped_index(dose.dose, ct.volume)[edge_band]
        at_edge = ndimage.map_coordinates(dose.dose.array, clamped[:, ::-1].T, order=1)
        np.testing.assert_allclose(on_ct.array[edge_band], at_edge, atol=2e-3)
        assert not on_ct.array[outside].any()


def _clamped_index(dose: Volume, grid: Volume) -> np.ndarray:
    """Continuous dose index (i, j, k) of every CT voxel centre, clamped to the dose grid, ``[k, j, i, 3]``."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    index = dose.lps_to_index(grid.index_to_lps(np.stack([ii, jj, kk], axis=-1)))
    return np.clip(index, 0, np.array(dose.size_ijk) - 1)


def _inside(dose: Volume, grid: Volume, margin: float) -> np.ndarray:
    """CT voxels whose centres lie inside the dose grid's voxel-centre box shrunk by ``margin`` (index units)."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    index = dose.lps_to_index(grid.index_to_lps(np.stack([ii, jj, kk], axis=-1)))
    limits = np.array(dose.size_ijk) - 1
    return np.all((index >= margin) & (index <= limits - margin), axis=-1)


def test_resample_dose_other_frame_and_no_overlap(tmp_path):
    dose_affine = axial_affine(origin=(0.0, 0.0, 0.0), spacing=(2.0, 2.0, 2.0))
    path = write_rtdose(tmp_path / "rd.dcm", np.ones((3, 4, 4)), dose_affine, "1.2.3")
    dose = read_rtdose(path)
    ct_grid = Volume(np.zeros((3, 4, 4), np.float32), axial_affine(origin=(500.0, 0.0, 0.0)))
    with pytest.raises(FrameOfReferenceError, match="1.2.3.9"):
        resample_dose(dose, CtSeries(ct_grid, [], "", "1.2.3.9", PatientInfo()))
    with pytest.raises(DoseError, match=r"rd\.dcm.*does not overlap the CT"):
        resample_dose(dose, CtSeries(ct_grid, [], "", "1.2.3", PatientInfo()))
    assert isinstance(dose, DoseGrid)


# ---------------------------------------------------------------- RTPLAN


def test_rtplan_pydicom_file():
    plan = read_rtplan(get_testdata_file("rtplan.dcm"))
    assert plan.label == "Plan1" and plan.fractions == 30
    assert plan.prescription_gy == pytest.approx(30.826203)
    assert plan.referenced_structure_set_uid == "1.2.333.444.55.6.7777.88888"
    (beam,) = plan.beams
    assert (beam.name, beam.number, beam.gantry_angles_deg, beam.energy) == ("Field 1", 1, [0.0], "6")
    assert beam.meterset_mu == pytest.approx(116.0036697) and beam.radiation_type == "PHOTON"
    np.testing.assert_allclose(beam.isocenter_lps, [235.711172833292, 244.135437110782, -724.97815409918])


def test_rtplan_arc_and_prescription_from_fraction_group(tmp_path):
    path = write_rtplan(tmp_path / "rp.dcm", "1.2.3", structure_set_uid="1.2.3.7",
                        gantry_angles=((0.0,), (180.0, 90.0, 90.0, 0.0)), beam_dose_gy=1.0, fractions=30)
    plan = read_rtplan(path)
    assert plan.prescription_gy == pytest.approx(60.0)  # 2 beams x 1 Gy x 30 fractions
    assert plan.dose_per_fraction_gy == pytest.approx(2.0)
    assert [b.gantry_angles_deg for b in plan.beams] == [[0.0], [180.0, 90.0, 0.0]]
    assert [b.meterset_mu for b in plan.beams] == [100.0, 200.0]
    assert plan.beams[1].collimator_angle_deg == 10.0 and plan.frame_of_reference_uid == "1.2.3"
    with_reference = read_rtplan(write_rtplan(tmp_path / "rp2.dcm", "1.2.3", prescription_gy=50.0))
    assert with_reference.prescription_gy == pytest.approx(50.0)


# ---------------------------------------------------------------- study


def test_load_study_pairs_objects_by_references(tmp_path):
    frame = "1.2.826.0.1.3680043.8.498.555"
    series = "1.2.826.0.1.3680043.8.498.556"
    affine = axial_affine(origin=(-10.0, -12.0, -4.0), spacing=(1.0, 1.0, 2.0))
    write_ct(tmp_path / "CT", stored_values((5, 12, 10)), affine, frame_uid=frame, series_uid=series)
    box = [ij_contour(affine, square_ij(1.5, 1.5, 5.5, 4.5), k) for k in (1, 2)]
    rs = write_rtstruct(tmp_path / "RS.dcm", frame, [("PTV", 1, box)], referenced_series_uid=series)
    stale = write_rtstruct(tmp_path / "RS_old.dcm", frame, [("Old", 1, box)])
    write_rtstruct(tmp_path / "RS_other.dcm", "1.2.3.4.999", [("Elsewhere", 1, box)])
    rs_uid = pydicom.dcmread(rs).SOPInstanceUID
    rp = write_rtplan(tmp_path / "RP.dcm", frame, structure_set_uid=rs_uid)
    rp_uid = pydicom.dcmread(rp).SOPInstanceUID
    dose_affine = axial_affine(origin=(-14.0, -14.0, -6.0), spacing=(3.0, 3.0, 3.0))
    write_rtdose(tmp_path / "RD_beam.dcm", dose_on_grid(dose_affine, (5, 8, 8)), dose_affine, frame,
                 plan_uid=rp_uid, summation="BEAM")
    write_rtdose(tmp_path / "RD.dcm", dose_on_grid(dose_affine, (5, 8, 8)), dose_affine, frame, plan_uid=rp_uid)
    (tmp_path / "notes.txt").write_text("treatment notes")
    before = hash_tree(tmp_path)

    study = load_study(tmp_path)

    assert study.ct.volume.shape == (5, 12, 10)
    assert study.structure_set is not None and study.structure_set.names() == ["PTV"]
    assert study.structure_set.path == rs and stale.exists()
    assert study.plan is not None and study.plan.path == rp
    assert study.dose is not None and study.dose.path.name == "RD.dcm"
    assert study.dose_on_ct is not None and study.dose_on_ct.same_grid(study.ct.volume)
    centre = study.dose_on_ct.array[2, 6, 5]
    assert centre == pytest.approx(float(linear_dose(study.ct.volume.index_to_lps(np.array([5, 6, 2])))), abs=2e-3)
    warnings = "\n".join(study.warnings)
    assert "notes.txt" in warnings and "RS_other.dcm" in warnings and "1.2.3.4.999" in warnings
    assert hash_tree(tmp_path) == before


def test_load_study_real_mim_folder(real_dicom_dir):
    study = load_study(real_dicom_dir / "mim-rtstruct-ge-ct")
    assert study.ct.volume.shape == (2, 512, 512)
    assert study.structure_set is not None and len(study.structure_set.rois) == 4
    assert study.dose is None and study.plan is None
    assert sum("lacks" in w for w in study.warnings) == 4
