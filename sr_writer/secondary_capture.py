"""Secondary Capture with the tumour outline and the result burned in.

Some PACS viewers show neither SEG nor SR, so a destination can ask for a
picture: up to four CE-T1 slices through the tumour with a red outline, the
probability of nodal metastasis and the model label drawn into the pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from inference.result import PipelineResult  # noqa: E402

from .common import (  # noqa: E402
    DEMO_WARNING,
    SourceSlice,
    contributing_equipment,
    model_label,
    segmentation_model,
    specific_character_set,
)
from .options import WriterOptions  # noqa: E402

logger = logging.getLogger(__name__)

MAX_PANELS = 4
PANEL_INCHES = 3.2
DPI = 100


def build_secondary_capture(
    result: PipelineResult,
    ce_t1: Sequence[SourceSlice],
    options: WriterOptions,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
) -> hd.sc.SCImage:
    """Build an RGB Secondary Capture Image with the tumour outline burned in.

    Parameters
    ----------
    result : PipelineResult
        The run; its mask must contain tumour voxels.
    ce_t1 : sequence of SourceSlice
        The CE-T1 image behind each mask slice, in the mask's slice order,
        with pixel data.
    options : WriterOptions
        Node identity.
    series_instance_uid, sop_instance_uid : str
        UIDs of the new object.
    series_number : int
        SeriesNumber of the new series.

    Raises
    ------
    ValueError
        If the mask is empty or a CE-T1 slice to draw has no pixel data.
    """
    mask = np.asarray(result.segmentation.mask) > 0
    slices = tumour_slices(mask)
    if not slices:
        raise ValueError("segmentation mask is empty; there is no tumour slice to draw")
    for k in slices:
        if "PixelData" not in ce_t1[k].dataset:
            raise ValueError(
                f"CE-T1 instance {ce_t1[k].sop_instance_uid} has no pixel data; pass the CE-T1 "
                "datasets with their pixels when the Secondary Capture is enabled"
            )
    image = render_montage(
        [ce_t1[k].pixels() for k in slices],
        [mask[k] for k in slices],
        [ce_t1[k].label() for k in slices],
        headline(result),
    )
    reference = ce_t1[0].dataset
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=image,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=options.manufacturer,
        patient_orientation=patient_orientation(ce_t1[0]),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        contributing_equipment=[contributing_equipment(options)],
        series_description=f"AI tumour overlay ({model_label(segmentation_model(result))})"[:64],
        specific_character_set=specific_character_set(reference),
    )
    # The outline and text are part of the pixels (PS3.3 C.7.6.1.1.3).
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "CE-T1 slices with tumour outline and AI result drawn in"
    # Laterality (0020,0060) is needed only for a paired body part (PS3.3
    # C.7.3.1); naming the unpaired one lets dciodvfy evaluate that condition.
    sc.BodyPartExamined = "TONGUE"
    logger.info("built Secondary Capture %s of %d slices", sop_instance_uid, len(slices))
    return sc


def tumour_slices(mask: np.ndarray) -> list[int]:
    """Return up to four slice indices with the largest tumour area, in slice order."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    ranked = [int(k) for k in np.argsort(-areas, kind="stable") if areas[k] > 0]
    return sorted(ranked[:MAX_PANELS])


def headline(result: PipelineResult) -> str:
    """Return the text drawn above the images: probability, risk group and model label."""
    nomogram = result.nomogram
    if nomogram is None or nomogram.probability is None:
        finding = "Nodal metastasis probability: not available"
    else:
        finding = f"Nodal metastasis probability: {100.0 * nomogram.probability:.0f} %"
        if nomogram.risk_group:
            finding += f" ({nomogram.risk_group} risk, cutoff {100.0 * nomogram.cutoff:.0f} %)"
    model = segmentation_model(result)
    label = DEMO_WARNING if result.is_demo else f"AI result, {model.name} {model.version}"
    volume = f"Tumour volume {result.segmentation.volume_mm3 / 1000.0:.2f} ml"
    return f"{label}\n{finding}\n{volume}"


def render_montage(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], labels: Sequence[str], text: str
) -> np.ndarray:
    """Draw the slices side by side with red tumour outlines and a text header.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB array of shape (rows, columns, 3).
    """
    count = len(images)
    figure = Figure(figsize=(PANEL_INCHES * count, PANEL_INCHES + 0.9), dpi=DPI, facecolor="black")
    canvas = FigureCanvasAgg(figure)
    figure.text(0.01, 0.99, text, color="yellow", fontsize=9, va="top", family="DejaVu Sans")
    for index, (image, mask, label) in enumerate(zip(images, masks, labels)):
        axes = figure.add_axes([index / count, 0.0, 1.0 / count, PANEL_INCHES / (PANEL_INCHES + 0.9)])
        low, high = np.percentile(image, [1.0, 99.0])
        axes.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1), interpolation="nearest")
        axes.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=1.2)
        axes.text(2, 2, label, color="yellow", fontsize=8, va="top")
        axes.set_axis_off()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])


def patient_orientation(reference: SourceSlice) -> tuple[str, str]:
    """Return PatientOrientation (0020,0020) letters of the row and column directions.

    The main patient axis of each direction cosine gives the letter, because
    a Secondary Capture carries no orientation matrix of its own.
    """
    cosines = reference.image_orientation
    return _direction_letter(cosines[:3]), _direction_letter(cosines[3:])


def _direction_letter(direction: Sequence[float]) -> str:
    # LPS: +x is left, +y posterior, +z head (PS3.3 C.7.6.1.1.1).
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    axis = int(np.argmax(np.abs(direction)))
    return letters[axis][1 if direction[axis] > 0 else 0]
