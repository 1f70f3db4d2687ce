"""Python packages the extension needs beyond what Slicer ships, checked without importing them.

The modules never install anything at import: the widget asks :func:`missing_requirements` at the
first Apply, shows one confirmation listing the packages, then installs them with
``slicer.packaging.pip_ensure`` (Slicer 5.12+) or ``slicer.util.pip_install``. torch comes from the
SlicerPyTorch extension (its ``PyTorchUtilsLogic().installTorch``), which picks the CPU or CUDA wheel.
"""

from __future__ import annotations

import importlib.util

__all__ = ["REQUIREMENTS", "TORCH_REQUIREMENT", "missing_requirements"]

#: import name -> pip requirement (pins agree with pyproject.toml)
REQUIREMENTS: dict[str, str] = {
    "pydicom": "pydicom>=3,<4",
    "monai": "monai==1.6.1",
    "skimage": "scikit-image>=0.22",
    "SimpleITK": "SimpleITK>=2.3",
    "nibabel": "nibabel>=5",
    "scipy": "scipy>=1.11",
    "matplotlib": "matplotlib>=3.8",
    "tqdm": "tqdm>=4.66",
}
TORCH_REQUIREMENT = "torch==2.13.0"


def missing_requirements(include_torch: bool = True) -> list[str]:
    """pip requirements whose import name cannot be found (torch first when missing)."""
    missing = [spec for name, spec in REQUIREMENTS.items() if importlib.util.find_spec(name) is None]
    if include_torch and importlib.util.find_spec("torch") is None:
        missing.insert(0, TORCH_REQUIREMENT)
    return missing
