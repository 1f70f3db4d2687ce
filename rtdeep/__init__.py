"""rtdeep: deep learning for radiotherapy, the core of the RTDeepSeg and RTPneumonitisPredictor
3D Slicer modules. Runs without Slicer: DICOM RT I/O, synthetic phantoms, dose-masked crops, DVH
and NTCP, segmentation models, pneumonitis risk."""

__version__ = "0.1.0"
