"""Inside Slicer: AI-like contours on a synthetic CT exported as RTSTRUCT, read back with pydicom.

The CT gets a DICOM identity the way Slicer's DICOM module gives one, so the export path that a
user takes after loading a study runs end to end. pytest covers the same logic outside Slicer
(Testing/test_slicer_modules.py); this checks it inside the application.
"""

import os
import tempfile
import unittest

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class RTDeepSegExportSelfTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_exportRtStruct()

    def test_exportRtStruct(self):
        import pydicom

        from rtdeep.dicomrt.types import CtSeries, PatientInfo, Roi
        from rtdeep.dicomrt.uids import make_uid
        from rtdeep.slicer.segmentation_node import segmentation_node_from_rois
        from rtdeep.slicer.subject_hierarchy import attach_dicom_series
        from rtdeep.slicer.volume_node import node_from_volume
        from rtdeep.volume import Volume, affine_from_geometry
        from RTDeepSeg import RTDeepSegLogic

        ct = Volume(
            np.full((8, 24, 24), -1000.0, np.float32),
            affine_from_geometry((-30.0, -30.0, 0.0), (2.5, 2.5, 3.0)),
        )
        mask = np.zeros(ct.shape, bool)
        mask[2:6, 6:18, 4:12] = True
        ctNode = node_from_volume(slicer.mrmlScene, ct, "CT")
        series = CtSeries(
            volume=ct,
            sop_instance_uids=[make_uid("selftest", "ct", k) for k in range(ct.shape[0])],
            series_instance_uid=make_uid("selftest", "series"),
            frame_of_reference_uid=make_uid("selftest", "for"),
            patient=PatientInfo(
                patient_id="SELFTEST",
                patient_name="Self^Test",
                study_instance_uid=make_uid("selftest", "study"),
            ),
        )
        attach_dicom_series(ctNode, series)
        segmentation = segmentation_node_from_rois(
            slicer.mrmlScene, [Roi("Lung_L", mask, 1, (0, 200, 255))], ctNode, "AI"
        )
        path = os.path.join(tempfile.mkdtemp(), "RS.dcm")
        RTDeepSegLogic().exportRtStruct(segmentation, ctNode, path)
        dataset = pydicom.dcmread(path)
        self.assertEqual(dataset.StructureSetROISequence[0].ROIName, "Lung_L")
        self.assertEqual(
            dataset.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID, series.frame_of_reference_uid
        )


if __name__ == "__main__":
    unittest.main()
