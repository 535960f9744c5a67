"""DICOM Segmentation of the tumour on the CE-T1 images (PS3.3 A.51)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom

from inference.result import PipelineResult

from . import codes
from .common import (
    SourceSlice,
    contributing_equipment,
    model_label,
    segmentation_model,
    specific_character_set,
)
from .identity import stable_uid
from .options import WriterOptions

logger = logging.getLogger(__name__)

SEGMENT_NUMBER = 1
SEGMENT_LABEL = "Tumour (primary)"
TRACKING_ID = "Primary tumour"

# Recommended display colour: a saturated red, CIELab L*=53 a*=80 b*=67
# (sRGB 255, 0, 0), the colour the Secondary Capture outline also uses.
TUMOUR_COLOUR = hd.color.CIELabColor(53.24, 80.09, 67.20)


def tracking_uid(seg_instance_uid: str) -> str:
    """Return the segment's Tracking UID, shared with the SR's measurement group."""
    return stable_uid(seg_instance_uid, "segment-1")


def build_segmentation(
    result: PipelineResult,
    ce_t1: Sequence[SourceSlice],
    options: WriterOptions,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
) -> hd.seg.Segmentation:
    """Build a BINARY SEG of the tumour mask on the CE-T1 source images.

    Parameters
    ----------
    result : PipelineResult
        The run; ``result.segmentation.mask`` must contain tumour voxels,
        because a SEG without any segmented voxel is invalid.
    ce_t1 : sequence of SourceSlice
        The CE-T1 image behind each mask slice, in the mask's slice order:
        single-frame instances, or the frames of one multi-frame (Enhanced
        MR) instance.
    options : WriterOptions
        Node identity and the choice to omit empty frames.
    series_instance_uid, sop_instance_uid : str
        UIDs of the new object.
    series_number : int
        SeriesNumber of the new series.

    Raises
    ------
    ValueError
        If the mask is empty, its shape does not match the source images,
        or the slices lie on several multi-frame instances or on only part
        of one.
    """
    mask = _checked_mask(result, ce_t1)
    source_images, mask = source_images_and_frames(ce_t1, mask)
    model = segmentation_model(result)

    description = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.TUMOUR_CATEGORY,
        segmented_property_type=codes.TUMOUR_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model.name,
            version=model.version,
            family=codes.ALGORITHM_FAMILY,
            source=options.manufacturer,
        ),
        tracking_uid=tracking_uid(sop_instance_uid),
        tracking_id=TRACKING_ID,
        anatomic_regions=[codes.TONGUE],
        display_color=TUMOUR_COLOUR,
    )

    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=options.manufacturer,
        manufacturer_model_name=options.manufacturer_model_name,
        software_versions=options.software_versions,
        device_serial_number=options.device_serial_number,
        content_description="Tumour segmented by an algorithm",
        content_label="TUMOUR",
        omit_empty_frames=options.omit_empty_frames,
        contributing_equipment=[contributing_equipment(options)],
        series_description=f"AI tumour SEG ({model_label(model)})"[:64],
        specific_character_set=specific_character_set(source_images[0]),
        coding_schemes=[codes.private_scheme_item()],
    )
    _add_site_attributes(seg, options)
    _note_superseded(seg, options)
    logger.info(
        "built SEG %s with %d frames for study %s",
        sop_instance_uid, int(seg.NumberOfFrames), result.study_instance_uid,
    )
    return seg


def _checked_mask(result: PipelineResult, ce_t1: Sequence[SourceSlice]) -> np.ndarray:
    mask = np.asarray(result.segmentation.mask)
    if mask.ndim != 3:
        raise ValueError(f"segmentation mask must be 3-D [z, y, x], got shape {mask.shape}")
    if not mask.any():
        raise ValueError(
            "segmentation mask is empty; a SEG needs at least one tumour voxel, "
            "so report 'no tumour found' in the SR alone"
        )
    first = ce_t1[0].dataset
    expected = (len(ce_t1), int(first.Rows), int(first.Columns))
    if mask.shape != expected:
        raise ValueError(
            f"segmentation mask shape {mask.shape} does not match the CE-T1 source "
            f"images {expected} (slices, rows, columns); pass the mask on the CE-T1 grid"
        )
    return (mask > 0).astype(np.uint8)


def source_images_and_frames(
    ce_t1: Sequence[SourceSlice], mask: np.ndarray
) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """Return highdicom's ``source_images`` and the mask arranged to match them frame for frame.

    Single-frame sources keep the mask's slice order, one instance per
    slice. A multi-frame source is passed alone, and the mask is reordered
    into the source's frame order, because highdicom pairs mask frame ``i``
    with source frame ``i + 1`` and copies that frame's position and
    reference (ReferencedFrameNumber) into the SEG.

    Raises
    ------
    ValueError
        If multi-frame slices come from more than one instance, are mixed
        with single-frame ones, or do not cover every frame of their
        instance exactly once.
    """
    multiframe = [item for item in ce_t1 if item.frame_number is not None]
    if not multiframe:
        return [item.dataset for item in ce_t1], mask

    source = multiframe[0].dataset
    instances = {item.sop_instance_uid for item in ce_t1}
    if len(multiframe) != len(ce_t1) or len(instances) > 1:
        raise ValueError(
            f"the segmentation lies on {len(instances)} CE-T1 instances, at least one of them "
            f"multi-frame ({source.SOPClassUID.name}), but highdicom builds a SEG only on the "
            "frames of one multi-frame instance or on single-frame instances; convert the "
            "CE-T1 series to one of those forms before segmenting it"
        )

    count = int(source.NumberOfFrames)
    frame_numbers = sorted(item.frame_number for item in ce_t1)
    if frame_numbers != list(range(1, count + 1)):
        raise ValueError(
            f"the mask's {len(ce_t1)} slices name frames {frame_numbers} of CE-T1 instance "
            f"{source.SOPInstanceUID} ({source.SOPClassUID.name}, {count} frames), but a SEG on "
            "one multi-frame source needs every frame exactly once; segment the full stack of frames"
        )

    by_frame = np.empty_like(mask)
    for index, item in enumerate(ce_t1):
        by_frame[item.frame_number - 1] = mask[index]
    return [source], by_frame


def _add_site_attributes(seg: hd.seg.Segmentation, options: WriterOptions) -> None:
    # General Equipment module (PS3.3 C.7.5.1), type 3 attributes.
    if options.institution_name:
        seg.InstitutionName = options.institution_name
    if options.station_name:
        seg.StationName = options.station_name


def _note_superseded(seg: hd.seg.Segmentation, options: WriterOptions) -> None:
    # The SEG IOD has no attribute that names a predecessor, unlike the SR's
    # PredecessorDocumentsSequence. Viewers show ImageComments (General Image
    # module), so the replaced SEGs are named there. The SR names them too,
    # in "Replaces earlier result" text items.
    replaced = [
        item.sop_instance_uid
        for item in options.superseded_objects
        if item.sop_class_uid == pydicom.uid.SegmentationStorage
    ]
    if replaced:
        seg.ImageComments = ("Replaces SEG " + ", ".join(replaced))[:10240]
