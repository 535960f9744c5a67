"""Radiomics features of the tumour, extracted with pyradiomics 3.0.1.

Every series in ``images`` must lie on the grid of the mask (the CE-T1
grid, after alignment). Features are named
``<sequence>_<image type>_<class>_<feature>``, for example
``ce_t1_original_glcm_Contrast``. Shape features depend only on the mask,
so they are computed once, on the CE-T1 pass, and carry the ``ce_t1``
prefix (``ce_t1_original_shape_MeshVolume``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from inference.errors import InputError
from inference.result import RadiomicsResult, SequenceRole

logger = logging.getLogger(__name__)

DEFAULT_PARAMS_PATH = Path(__file__).parent / "params" / "radiomics.yaml"

# Mask and image may differ by rounding in origin, spacing and direction
# (DICOM decimal strings, NIfTI/NRRD round trips). Up to this amount in mm
# (or in direction cosine) the mask takes the image's geometry unchanged.
GEOMETRY_TOLERANCE = 1e-4

STATUS_OK = "ok"
STATUS_ROI_TOO_SMALL = "roi_too_small"

# Shape features describe the mask alone, so only the CE-T1 pass computes them.
SHAPE_CLASSES = ("shape", "shape2D")

# Openings of the ValueError messages that pyradiomics 3.0.1
# (imageoperations.checkMask and featureextractor.loadImage) raises when the
# ROI is empty or too small after resampling or resegmentation.
_PYRADIOMICS_ROI_MESSAGES = (
    "Label (",
    "mask only contains 1 segmented voxel",
    "mask has too few dimensions",
    "Size of the ROI is too small",
    "Mask checks failed",
)


def _quiet_pyradiomics() -> None:
    """Silence the stderr handler that pyradiomics adds on import.

    pyradiomics 3.0.1 needs that handler to stay attached (its parameter
    file loader passes it to pykwalify), so it is kept at CRITICAL. Records
    at WARNING and above still reach the application's handlers through
    the root logger.
    """
    radiomics.setVerbosity(logging.CRITICAL)
    logging.getLogger("radiomics").setLevel(logging.WARNING)
    # pyradiomics 3.0.1 warns that GLCM SumVariance is deprecated on every
    # extraction, even when the parameter file does not enable it.
    logging.getLogger("radiomics.glcm").addFilter(_drop_deprecation_notice)


def _drop_deprecation_notice(record: logging.LogRecord) -> bool:
    return "is deprecated" not in record.getMessage()


_quiet_pyradiomics()


def extract_tumour_features(
    images: Mapping[SequenceRole, sitk.Image],
    mask: sitk.Image,
    *,
    params_path: Path | None = None,
) -> RadiomicsResult:
    """Extract the radiomics features of the tumour from every series.

    Parameters
    ----------
    images : Mapping[SequenceRole, SimpleITK.Image]
        The series on the mask's grid. CE-T1 is required.
    mask : SimpleITK.Image
        Tumour mask, non-zero inside the tumour.
    params_path : Path or None
        pyradiomics parameter file; ``None`` uses ``params/radiomics.yaml``.

    Returns
    -------
    RadiomicsResult
        Status ``"ok"`` with the features, or ``"roi_too_small"`` with a
        message when the mask is empty or too small for pyradiomics
        (``minimumROISize`` and ``minimumROIDimensions`` in the parameter
        file, checked after resampling). A tumour cut by the edge of the
        image is measured as far as it is inside, so it gives
        ``"roi_too_small"`` only when that part is too small.

    Raises
    ------
    ValueError
        If CE-T1 is missing from ``images``.
    InputError
        If a series and the mask lie on different grids (code
        ``"mask_geometry_mismatch"``).
    """
    if SequenceRole.CE_T1 not in images:
        raise ValueError(
            f"images must contain {SequenceRole.CE_T1.label} but has {[r.value for r in images]}. "
            "Pass the CE-T1 series that the mask was drawn on."
        )
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params_path or DEFAULT_PARAMS_PATH))
    label = int(extractor.settings.get("label", 1))
    all_classes = dict(extractor.enabledFeatures)

    # Every grid is checked before any work, so a mismatch raises even for an empty mask.
    roles = [role for role in SequenceRole if role in images]
    role_masks = {role: _binary_mask_on_grid(mask, images[role], role, label) for role in roles}
    roi_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    if roi_voxels == 0:
        return RadiomicsResult(
            status=STATUS_ROI_TOO_SMALL, message="The tumour mask contains no voxels."
        )

    features: dict[str, float] = {}
    for role in roles:
        extractor.enabledFeatures = _classes_for_role(all_classes, role)
        try:
            raw = extractor.execute(images[role], role_masks[role], label=label)
        except ValueError as exc:
            if not str(exc).startswith(_PYRADIOMICS_ROI_MESSAGES):
                raise
            logger.warning("Radiomics skipped, ROI of %d voxels rejected: %s", roi_voxels, exc)
            return RadiomicsResult(
                status=STATUS_ROI_TOO_SMALL,
                message=f"The tumour mask ({roi_voxels} voxels) is too small for radiomics: {exc}",
            )
        features.update(_named_features(raw, role))

    return RadiomicsResult(status=STATUS_OK, features=features)


def _classes_for_role(all_classes: dict, role: SequenceRole) -> dict:
    """Return the feature classes to compute on ``role``: shape only on CE-T1."""
    if role is SequenceRole.CE_T1:
        return dict(all_classes)
    return {name: value for name, value in all_classes.items() if name not in SHAPE_CLASSES}


def _named_features(raw: Mapping[str, object], role: SequenceRole) -> dict[str, float]:
    """Prefix pyradiomics' feature names with the sequence and drop diagnostics."""
    return {
        f"{role.value}_{name}": float(value)
        for name, value in raw.items()
        if not name.startswith("diagnostics_")
    }


def _binary_mask_on_grid(
    mask: sitk.Image, image: sitk.Image, role: SequenceRole, label: int
) -> sitk.Image:
    """Return ``mask`` as a ``label``-valued UInt8 image on ``image``'s grid.

    Raises
    ------
    InputError
        If the grids differ by more than :data:`GEOMETRY_TOLERANCE`.
    """
    if mask.GetSize() != image.GetSize():
        raise InputError(
            f"The tumour mask has size {mask.GetSize()} but the {role.label} series has "
            f"size {image.GetSize()}. Resample the series onto the mask's grid first.",
            code="mask_geometry_mismatch",
        )
    for name, mask_value, image_value in (
        ("origin", mask.GetOrigin(), image.GetOrigin()),
        ("spacing", mask.GetSpacing(), image.GetSpacing()),
        ("direction", mask.GetDirection(), image.GetDirection()),
    ):
        difference = float(np.max(np.abs(np.subtract(mask_value, image_value))))
        if difference > GEOMETRY_TOLERANCE:
            raise InputError(
                f"The tumour mask's {name} {tuple(mask_value)} differs from the {role.label} "
                f"series' {name} {tuple(image_value)} by {difference:.3g}, more than the "
                f"tolerance {GEOMETRY_TOLERANCE}. Resample the series onto the mask's grid first.",
                code="mask_geometry_mismatch",
            )

    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8) * label
    binary.CopyInformation(image)
    return binary
