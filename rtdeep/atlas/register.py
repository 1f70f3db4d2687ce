"""Atlas-to-patient registration with SimpleITK: affine, then symmetric-forces demons.

Both images are CT in HU on coarse grids (:data:`rtdeep.atlas.library.ATLAS_SPACING_MM`). The
affine stage starts from the images' centres of mass (HU + 1000, so air weighs nothing) and
optimises Mattes mutual information; the demons stage then refines the atlas, already resampled
onto the patient's grid by the affine, voxel by voxel. The result maps *patient* LPS points to
*atlas* LPS points, the direction ``sitk.Resample`` needs to pull atlas labels onto the patient.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rtdeep.volume import Volume

__all__ = ["body_mask", "register_atlas", "to_sitk"]

#: HU range used for registration (air .. dense bone)
_HU_RANGE = (-1000.0, 1500.0)
#: Gaussian blur (mm) of both images before demons
_DEMONS_IMAGE_SIGMA_MM = 4.0


def to_sitk(volume: Volume, dtype: type = np.float32) -> sitk.Image:
    """A SimpleITK image with ``volume``'s array and geometry (origin, spacing, direction in LPS)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array, dtype=dtype))
    image.SetOrigin(tuple(float(v) for v in volume.origin_lps))
    image.SetSpacing(tuple(float(v) for v in volume.spacing_mm))
    image.SetDirection(tuple(float(v) for v in volume.direction.ravel()))  # row-major; columns = i, j, k
    return image


def body_mask(hu: np.ndarray, threshold_hu: float = -400.0) -> np.ndarray:
    """The patient's body ``[k, j, i]``: the largest connected region above ``threshold_hu``, with
    the lungs and other air inside filled slice by slice. The couch and other objects drop out."""
    above = ndimage.binary_opening(np.asarray(hu) > threshold_hu, iterations=1)
    labels, count = ndimage.label(above)
    if count == 0:
        return above
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == int(np.argmax(sizes)) + 1
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def _registration_image(volume: Volume) -> sitk.Image:
    """HU inside the body clipped to :data:`_HU_RANGE`, air outside, shifted so air is 0 (a mass
    for the moments initialiser, and no couch to align)."""
    hu = np.clip(np.asarray(volume.array, np.float32), *_HU_RANGE)
    array = np.where(body_mask(hu), hu, _HU_RANGE[0]) - _HU_RANGE[0]
    return to_sitk(volume.with_array(array.astype(np.float32)))


def _affine(
    fixed: sitk.Image, moving: sitk.Image, iterations: int, shrink_factors: tuple[int, ...], sampling: float
) -> sitk.Transform:
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed=20_260_501)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel([0.5 * (factor - 1) for factor in shrink_factors])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def _demons(fixed: sitk.Image, warped: sitk.Image, iterations: int, smoothing_mm: float) -> sitk.Image:
    """Displacement field (patient grid, mm) aligning ``warped`` (atlas after affine) to ``fixed``.

    Both images are blurred first (Gaussian, :data:`_DEMONS_IMAGE_SIGMA_MM`): the phantoms' CT noise
    and lung texture otherwise drive the demons forces more than the organ boundaries do.
    """
    fixed = sitk.SmoothingRecursiveGaussian(fixed, _DEMONS_IMAGE_SIGMA_MM)
    warped = sitk.SmoothingRecursiveGaussian(warped, _DEMONS_IMAGE_SIGMA_MM)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(smoothing_mm)
    demons.SetUseImageSpacing(True)
    matched = sitk.HistogramMatching(warped, fixed, numberOfHistogramLevels=128, numberOfMatchPoints=16)
    return demons.Execute(fixed, matched)


def register_atlas(
    patient_ct: Volume,
    atlas_ct: Volume,
    *,
    affine_iterations: int = 100,
    affine_shrink_factors: tuple[int, ...] = (4, 2),
    affine_sampling: float = 0.1,
    demons_iterations: int = 60,
    smoothing_mm: float = 4.0,
) -> sitk.Transform:
    """Register an atlas CT to a patient CT (both HU ``[k, j, i]`` with LPS affines, coarse grids).

    Args:
        patient_ct: the patient's CT (fixed image), e.g. resampled to 4 mm.
        atlas_ct: the atlas CT (moving image).
        affine_iterations: gradient-descent iterations per resolution level of the affine stage.
        affine_shrink_factors: image shrink factor of each resolution level of the affine stage.
        affine_sampling: fraction of voxels sampled by the affine stage's metric.
        demons_iterations: demons iterations (0 = affine only).
        smoothing_mm: Gaussian smoothing of the demons displacement field (mm): larger is stiffer.

    Returns:
        A transform taking patient LPS points (mm) to atlas LPS points.
    """
    fixed = _registration_image(patient_ct)
    moving = _registration_image(atlas_ct)
    affine = _affine(fixed, moving, affine_iterations, affine_shrink_factors, affine_sampling)
    if demons_iterations <= 0:
        return affine
    warped = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    field = _demons(fixed, warped, demons_iterations, smoothing_mm)
    # composite transforms apply the last added first: patient point -> + displacement -> affine
    composite = sitk.CompositeTransform(affine)
    composite.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64)))
    return composite
