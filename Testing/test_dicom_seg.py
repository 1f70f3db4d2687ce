"""DICOM SEG export: highdicom writes it, dciodvfy accepts it, highdicom and rtdeep read it back exactly."""

from __future__ import annotations

import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.seg_reader import read_seg
from rtdeep.dicomrt.seg_writer import write_seg
from rtdeep.dicomrt.types import Roi
from rtdeep.errors import StructureError
from rtdeep.metrics import dice_coefficient
from rtdeep.phantom import generate_patient
from rtdeep.phantom.patient import write_patient
from rtdeep.sites import ORGANS

ORGAN_NAMES = ["Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    patient = generate_patient("thorax", 3, 0, grid="small")
    folder = write_patient(patient, root)
    ct = read_ct_series(folder / "CT")
    rois = [roi for roi in patient.rois if roi.name in ORGAN_NAMES]
    rois.append(Roi("Glnd_Submand_L", np.zeros(ct.volume.shape, bool)))  # an organ the "model" did not find
    result = write_seg(ct, rois, root / "SEG.dcm", algorithm_name="thorax_unet3d", algorithm_version="0.1.0")
    return ct, rois, result


def test_seg_passes_dciodvfy(written):
    _, _, result = written
    report = subprocess.run(["dciodvfy", str(result.path)], check=False, capture_output=True, text=True)
    messages = report.stdout + report.stderr
    assert "Segmentation" in messages
    assert [line for line in messages.splitlines() if line.startswith("Error")] == []


def test_empty_organ_is_reported_not_written(written, tmp_path):
    ct, rois, result = written
    assert result.segments == ORGAN_NAMES and result.empty == ["Glnd_Submand_L"]
    labels = [item.SegmentLabel for item in pydicom.dcmread(result.path).SegmentSequence]
    assert labels == ORGAN_NAMES
    empty = [Roi(name, np.zeros(ct.volume.shape, bool)) for name in ORGAN_NAMES]
    with pytest.raises(StructureError, match="empty"):
        write_seg(ct, empty, tmp_path / "none.dcm", algorithm_name="m", algorithm_version="1")
    assert not (tmp_path / "none.dcm").exists()
    # the RTSTRUCT writer keeps the same rule (checklist 11)
    path = write_rtstruct(ct, rois, tmp_path / "RS.dcm")
    assert [item.ROIName for item in pydicom.dcmread(path).StructureSetROISequence] == ORGAN_NAMES


def test_highdicom_reads_codes_labels_and_algorithm(written):
    _, _, result = written
    seg = hd.seg.segread(result.path)
    assert seg.number_of_segments == len(ORGAN_NAMES)
    for number, name in enumerate(ORGAN_NAMES, start=1):
        description = seg.get_segment_description(number)
        organ = ORGANS[name]
        assert description.segment_label == name
        assert description.segmented_property_type.value == organ.type_code.value
        assert description.segmented_property_type.scheme_designator == "SCT"
        assert description.segmented_property_category.value == organ.category_code.value
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.algorithm_identification[0].AlgorithmName == "thorax_unet3d"
        assert description.algorithm_identification[0].AlgorithmVersion == "0.1.0"
        modifiers = description.SegmentedPropertyTypeCodeSequence[0].get(
            "SegmentedPropertyTypeModifierCodeSequence", [])
        assert [m.CodeValue for m in modifiers] == ([organ.laterality.value] if organ.laterality else [])


def test_read_back_by_highdicom_and_rtdeep_with_dice_one(written):
    ct, rois, result = written
    by_name = {roi.name: roi for roi in rois}
    seg = hd.seg.segread(result.path)
    # highdicom: frames by the CT slices they reference, in the CT's slice order
    volume = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=ct.sop_instance_uids, segment_numbers=list(range(1, len(ORGAN_NAMES) + 1)),
        ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    for number, name in enumerate(ORGAN_NAMES):
        assert dice_coefficient(by_name[name].mask, volume[..., number].astype(bool)) == 1.0
    back = read_seg(result.path, ct)
    assert [roi.name for roi in back] == ORGAN_NAMES
    for roi in back:
        assert np.array_equal(roi.mask, by_name[roi.name].mask)
        assert dice_coefficient(by_name[roi.name].mask, roi.mask) == 1.0
