"""Alignment of the T2 and T1 series onto the CE-T1 grid.

Series of one study that share a Frame of Reference UID are in the same
patient coordinate system (PS3.3 C.7.4.1), so resampling by patient
coordinates aligns them. Where the frames differ, or the patient moved
between series, an optional rigid registration corrects the residual shift.
"""

from __future__ import annotations

import enum
import logging

import numpy as np
import SimpleITK as sitk

from inference.errors import InputError
from inference.result import AlignmentRecord, SequenceRole
from inference.segment import same_grid
from inference.volume import SeriesVolume

logger = logging.getLogger(__name__)

# Registration settings: coarse to fine over three levels, with a fixed
# sampling seed so that repeated runs on a study sample the same voxels.
REGISTRATION_SHRINK_FACTORS = (4, 2, 1)
REGISTRATION_SMOOTHING_MM = (2.0, 1.0, 0.0)
REGISTRATION_ITERATIONS = 100
REGISTRATION_SAMPLING = 0.2
REGISTRATION_SEED = 20240611
HISTOGRAM_BINS = 50


class AlignmentMethod(enum.Enum):
    """Method by which a series was brought onto the reference grid."""

    SAME_GRID = "same_grid"
    RESAMPLED_SAME_FRAME = "resampled_same_frame_of_reference"
    RESAMPLED_DIFFERENT_FRAME = "resampled_different_frame_of_reference"
    RIGID_REGISTRATION = "rigid_registration_mattes_mi"


def resample_to_reference(
    moving: sitk.Image,
    reference: sitk.Image,
    *,
    is_label: bool = False,
    transform: sitk.Transform | None = None,
) -> sitk.Image:
    """Resample an image onto the reference grid by patient coordinates.

    Parameters
    ----------
    moving : SimpleITK.Image
        Image to resample.
    reference : SimpleITK.Image
        Image whose size, origin, spacing and direction the result takes.
    is_label : bool
        Use nearest-neighbour interpolation and keep the pixel type, so
        label values survive; otherwise linear interpolation to float32.
    transform : SimpleITK.Transform, optional
        Maps reference points to moving points; identity by default.

    Returns
    -------
    SimpleITK.Image
        The resampled image; voxels outside the moving image are 0.
    """
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pixel_type = moving.GetPixelID() if is_label else sitk.sitkFloat32
    return sitk.Resample(
        moving,
        reference,
        transform if transform is not None else sitk.Transform(),
        interpolator,
        0.0,
        pixel_type,
    )


def align_series(
    moving: SeriesVolume,
    reference: SeriesVolume,
    role: SequenceRole,
    *,
    register: bool,
) -> tuple[sitk.Image, AlignmentRecord]:
    """Bring one series onto the reference (CE-T1) grid and record how.

    Parameters
    ----------
    moving : SeriesVolume
        The series to align, such as the T2.
    reference : SeriesVolume
        The series whose grid the result takes.
    role : SequenceRole
        Role of ``moving``, stored in the record.
    register : bool
        Run a rigid registration (Euler 3D, Mattes mutual information)
        after the resampling by patient coordinates.

    Raises
    ------
    InputError
        If the registration fails or the series do not overlap.
    """
    same_frame = (
        moving.frame_of_reference_uid is not None
        and moving.frame_of_reference_uid == reference.frame_of_reference_uid
    )
    if register:
        return _register(moving, reference, role)

    if same_frame and same_grid(moving.image, reference.image):
        return moving.image, AlignmentRecord(role=role, method=AlignmentMethod.SAME_GRID.value)

    method = AlignmentMethod.RESAMPLED_SAME_FRAME if same_frame else AlignmentMethod.RESAMPLED_DIFFERENT_FRAME
    if not same_frame:
        logger.warning(
            "Series %s and %s have different frames of reference; aligned by patient coordinates only",
            moving.series_instance_uid,
            reference.series_instance_uid,
        )
    resampled = resample_to_reference(moving.image, reference.image)
    _check_overlap(resampled, moving, reference)
    return resampled, AlignmentRecord(role=role, method=method.value)


def _register(
    moving: SeriesVolume, reference: SeriesVolume, role: SequenceRole
) -> tuple[sitk.Image, AlignmentRecord]:
    method = _registration_method()
    fixed_image = reference.image
    moving_image = moving.image
    initial = sitk.CenteredTransformInitializer(
        fixed_image,
        moving_image,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    # Starting from the image centres would undo a known offset between
    # series that share patient coordinates, so start from the identity and
    # keep only the rotation centre.
    start = sitk.Euler3DTransform()
    start.SetCenter(sitk.Euler3DTransform(initial).GetCenter())
    method.SetInitialTransform(start, inPlace=False)

    try:
        transform = method.Execute(fixed_image, moving_image)
    except RuntimeError as exc:
        raise InputError(
            f"rigid registration of series {moving.series_instance_uid} to "
            f"{reference.series_instance_uid} failed: {exc}",
            code="registration_failed",
            series_instance_uid=moving.series_instance_uid,
            hint="turn registration off to align by patient coordinates only",
        ) from exc

    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0))
    parameters = tuple(float(v) for v in (*euler.GetParameters(), *euler.GetFixedParameters()))
    logger.info(
        "Registered series %s to %s: metric %.4f after %d iterations (%s)",
        moving.series_instance_uid,
        reference.series_instance_uid,
        method.GetMetricValue(),
        method.GetOptimizerIteration(),
        method.GetOptimizerStopConditionDescription(),
    )

    resampled = resample_to_reference(moving_image, fixed_image, transform=euler)
    _check_overlap(resampled, moving, reference)
    record = AlignmentRecord(
        role=role,
        method=AlignmentMethod.RIGID_REGISTRATION.value,
        transform=parameters,
        metric_value=float(method.GetMetricValue()),
    )
    return resampled, record


def _registration_method() -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(REGISTRATION_SAMPLING, REGISTRATION_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=REGISTRATION_ITERATIONS,
        gradientMagnitudeTolerance=1e-6,
    )
    # Scales from physical shifts make one radian and one millimetre comparable.
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(REGISTRATION_SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(REGISTRATION_SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _check_overlap(resampled: sitk.Image, moving: SeriesVolume, reference: SeriesVolume) -> None:
    # Resampling fills voxels outside the moving image with 0, so an all-zero
    # result of a non-zero image means the series do not overlap in space.
    has_signal = bool(np.any(sitk.GetArrayViewFromImage(moving.image)))
    if has_signal and not np.any(sitk.GetArrayViewFromImage(resampled)):
        raise InputError(
            f"series {moving.series_instance_uid} does not overlap series "
            f"{reference.series_instance_uid} in patient coordinates",
            code="series_do_not_overlap",
            series_instance_uid=moving.series_instance_uid,
            hint="check that the series belong to the same study and patient position",
        )
