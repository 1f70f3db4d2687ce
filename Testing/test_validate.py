"""The validator finds each defect injected into a copy of a valid RT Structure Set, passes the
valid one, and the ``rtdeep validate`` command reports and exits accordingly."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import hash_tree
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtdeep.cli import main
from rtdeep.dicomrt.ct_writer import write_ct_series
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.types import PatientInfo, Roi
from rtdeep.dicomrt.validate import Finding, check_rtstruct, run_dcmpschk, validate_paths
from rtdeep.volume import Volume, affine_from_geometry


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("validate")
    hu = Volume(np.zeros((5, 32, 32), np.float32), affine_from_geometry((-50.0, -40.0, 10.0), (1.5, 1.5, 2.0)))
    patient = PatientInfo(patient_name="Check^Me", patient_id="V1", patient_birth_date="19700101", patient_sex="M",
                          study_date="20260101", study_time="120000", study_id="7")
    ct = write_ct_series(hu, root / "CT", patient, uid_seed="validate")
    masks = []
    for k0, k1 in ((0, 4), (1, 3)):
        mask = np.zeros(hu.shape, bool)
        mask[k0:k1, 8:20, 6 + k0 * 10: 14 + k0 * 10] = True
        masks.append(mask)
    rois = [Roi("Heart", masks[0]), Roi("Esophagus", masks[1])]
    rs = write_rtstruct(ct, rois, root / "RS.dcm", uid_seed="validate")
    return {"root": root, "ct": ct, "rs": rs}


def _broken_copy(study: dict, tmp_path: Path, edit: Callable[[Dataset], None]) -> Path:
    ds = pydicom.dcmread(study["rs"])
    path = tmp_path / "RS_broken.dcm"
    with warnings.catch_warnings():  # pydicom warns about the deliberately invalid values
        warnings.simplefilter("ignore")
        edit(ds)
        ds.save_as(path, implicit_vr=True, little_endian=True)  # file meta kept as edited
    return path


def _first_contour(ds: Dataset) -> Dataset:
    return ds.ROIContourSequence[0].ContourSequence[0]


def _set_points(item: Dataset, values: list[str]) -> None:
    data = "\\".join(values).encode()
    data += b" " * (len(data) % 2)
    item[0x30060050] = RawDataElement(pydicom.tag.Tag(0x30060050), "DS", len(data), data, 0, True, True)


def _points(item: Dataset) -> list[str]:
    return [v.decode() for v in item.get_item(0x30060050).value.strip().split(b"\\")]


def _repeat_first(ds: Dataset) -> None:
    item = _first_contour(ds)
    values = _points(item)
    _set_points(item, values + values[:3])
    item.NumberOfContourPoints = len(values) // 3 + 1


def _off_slice(ds: Dataset) -> None:
    item = _first_contour(ds)
    values = _points(item)
    values[2::3] = [f"{float(z) + 0.7:.3f}" for z in values[2::3]]
    _set_points(item, values)


def _long_ds(ds: Dataset) -> None:
    item = _first_contour(ds)
    values = _points(item)
    values[0] = f"{float(values[0]):.14f}"
    _set_points(item, values)


def _duplicate_number(ds: Dataset) -> None:
    ds.StructureSetROISequence[1].ROINumber = ds.StructureSetROISequence[0].ROINumber


def _point_count(ds: Dataset) -> None:
    _first_contour(ds).NumberOfContourPoints += 1


def _no_image_ref(ds: Dataset) -> None:
    del _first_contour(ds).ContourImageSequence


def _wrong_image_ref(ds: Dataset) -> None:
    _first_contour(ds).ContourImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"


def _dangling_roi(ds: Dataset) -> None:
    ds.ROIContourSequence[1].ReferencedROINumber = 99


def _frame_of_reference(ds: Dataset) -> None:
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3"


def _patient(ds: Dataset) -> None:
    ds.PatientID = "OTHER"


def _long_name(ds: Dataset) -> None:
    ds.StructureSetROISequence[0].ROIName = "Heart_and_great_vessels"


def _long_label(ds: Dataset) -> None:
    ds.StructureSetLabel = "A_LABEL_TOO_LONG_"


def _no_observations(ds: Dataset) -> None:
    del ds.RTROIObservationsSequence


def _instance_is_series(ds: Dataset) -> None:
    ds.SOPInstanceUID = ds.SeriesInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SeriesInstanceUID


def _meta_class(ds: Dataset) -> None:
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"


def _missing_type2(ds: Dataset) -> None:
    del ds.OperatorsName


DEFECTS = [
    (_duplicate_number, "error", "duplicate ROINumber"),
    (_point_count, "error", "NumberOfContourPoints"),
    (_no_image_ref, "error", "no ContourImageSequence"),
    (_wrong_image_ref, "error", "does not reference the slice"),
    (_off_slice, "error", "not on a CT slice"),
    (_long_ds, "error", "longer than 16 characters"),
    (_repeat_first, "error", "first point repeated"),
    (_dangling_roi, "error", "ReferencedROINumber 99"),
    (_frame_of_reference, "error", "FrameOfReferenceUID"),
    (_patient, "error", "PatientID 'OTHER' differs"),
    (_long_name, "warning", "ROIName longer than 16"),
    (_long_label, "error", "StructureSetLabel"),
    (_no_observations, "error", "RTROIObservationsSequence"),
    (_instance_is_series, "error", "SOPInstanceUID equals SeriesInstanceUID"),
    (_meta_class, "error", "MediaStorageSOPClassUID"),
    (_missing_type2, "error", "OperatorsName"),
]


def test_valid_structure_set_has_no_findings(study: dict) -> None:
    assert check_rtstruct(study["rs"], study["ct"]) == []
    assert [f for f in validate_paths([study["root"]]) if f.severity == "error"] == []


@pytest.mark.parametrize(("edit", "severity", "text"), DEFECTS, ids=[d[0].__name__.strip("_") for d in DEFECTS])
def test_injected_defect_is_found(study: dict, tmp_path: Path, edit: Callable[[Dataset], None], severity: str,
                                  text: str) -> None:
    broken = _broken_copy(study, tmp_path, edit)
    findings = check_rtstruct(broken, study["ct"])
    matching = [f for f in findings if text in f.message]
    assert matching, f"'{text}' not found in {[str(f) for f in findings]}"
    assert {f.severity for f in matching} == {severity}
    assert all(isinstance(f, Finding) and f.path == str(broken) for f in findings)


def test_cli_exit_codes(study: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = hash_tree(study["root"])
    assert main(["validate", str(study["root"])]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("OK: 0 error(s)")

    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    for path in study["ct"].files:
        (broken_dir / path.name).write_bytes(path.read_bytes())
    _broken_copy(study, broken_dir, _duplicate_number)
    assert main(["validate", "--no-tools", str(broken_dir)]) == 1
    out = capsys.readouterr().out
    assert "duplicate ROINumber" in out and out.strip().splitlines()[-1].startswith("FAIL:")

    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("not DICOM")
    assert main(["validate", str(not_dicom)]) == 2
    assert "notes.dcm" in capsys.readouterr().err
    assert hash_tree(study["root"]) == before


def test_real_mim_structure_set_against_partial_ct(real_dicom_dir: Path) -> None:
    folder = real_dicom_dir / "mim-rtstruct-ge-ct"
    findings = check_rtstruct(folder / "RS_MIM.dcm", folder)
    messages = [f.message for f in findings if f.severity == "error"]
    assert any("3 images not in the CT series" in m for m in messages)
    assert any("SOPInstanceUID equals SeriesInstanceUID" in m for m in messages)


def test_dcmpschk_flags_an_overlong_value(study: dict, tmp_path: Path) -> None:
    broken = _broken_copy(study, tmp_path, _long_label)
    findings = run_dcmpschk(broken)
    assert any(f.severity == "error" and "StructureSetLabel" in f.message for f in findings)
    assert run_dcmpschk(study["rs"]) == []
