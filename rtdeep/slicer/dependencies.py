"""Python packages the extension needs beyond what Slicer ships, and the one installer of both modules.

The modules never install anything at import: at the first Apply each widget calls
:func:`ensure_requirements_in_slicer`, which asks :func:`missing_requirements`, shows one
confirmation listing the packages, installs torch through the SlicerPyTorch extension (its
``PyTorchUtilsLogic().installTorch``, which picks the CPU or CUDA wheel) and the rest with
``slicer.packaging.pip_ensure`` (Slicer 5.12+) or ``slicer.util.pip_install``, and checks that
everything is importable afterwards. A failed install raises one error naming what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence

__all__ = [
    "REQUIREMENTS",
    "TORCH_REQUIREMENT",
    "ensure_requirements",
    "ensure_requirements_in_slicer",
    "missing_requirements",
]

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


def ensure_requirements(
    module_title: str,
    *,
    confirm: Callable[[str], bool],
    install_torch: Callable[[], object],
    pip_install: Callable[[Sequence[str]], object],
    include_torch: bool = True,
) -> bool:
    """Install what is missing after one confirmation; False when the user declines.

    Args:
        module_title: named in the confirmation.
        confirm: shows the message, returns the user's answer.
        install_torch: installs torch (returns None when it could not).
        pip_install: installs a list of pip requirements.
        include_torch: whether the module needs torch.

    Raises:
        RuntimeError: torch could not be installed, or a package is still missing afterwards.
    """
    missing = missing_requirements(include_torch=include_torch)
    if not missing:
        return True
    if not confirm(f"{module_title} needs these Python packages, which will be downloaded and installed now:"
                   "\n\n" + "\n".join(missing)):
        return False
    if TORCH_REQUIREMENT in missing:
        if install_torch() is None:
            raise RuntimeError("PyTorch could not be installed: install it from the PyTorch extension "
                               "(PyTorch Utils module), then press Apply again.")
        missing.remove(TORCH_REQUIREMENT)
    if missing:
        pip_install(missing)
    importlib.invalidate_caches()
    still = missing_requirements(include_torch=include_torch)
    if still:
        raise RuntimeError(f"These packages are still missing after the install: {', '.join(still)}.")
    return True


def ensure_requirements_in_slicer(module_title: str, include_torch: bool = True) -> bool:
    """:func:`ensure_requirements` with Slicer's dialogs and installers (call from a widget only)."""
    import slicer

    def install_torch() -> object:
        import PyTorchUtils  # from the SlicerPyTorch extension (an extension dependency)

        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)

    def pip_install(requirements: Sequence[str]) -> object:
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            return packaging.pip_ensure(list(requirements))
        return slicer.util.pip_install(list(requirements))

    with slicer.util.WaitCursor():
        return ensure_requirements(module_title, confirm=slicer.util.confirmOkCancelDisplay,
                                   install_torch=install_torch, pip_install=pip_install,
                                   include_torch=include_torch)
