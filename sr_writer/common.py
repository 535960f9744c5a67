"""Helpers shared by the SEG, SR and Secondary Capture writers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from inference.result import ModelIdentity, PipelineResult, SequenceRole

from .options import WriterOptions

DEMO_WARNING = "DEMO MODEL - NOT FOR CLINICAL USE"


@dataclass(frozen=True)
class SourceSlice:
    """The CE-T1 image behind one slice of the segmentation mask.

    Attributes
    ----------
    dataset : pydicom.Dataset
        The source instance. An Enhanced MR instance is the source of many
        slices, one per frame.
    frame_number : int or None
        1-based frame number inside a multi-frame ``dataset``; None for a
        single-frame instance.
    """

    dataset: pydicom.Dataset
    frame_number: int | None = None

    @property
    def sop_instance_uid(self) -> str:
        """SOP Instance UID of the source instance."""
        return str(self.dataset.SOPInstanceUID)

    @property
    def image_orientation(self) -> list[float]:
        """ImageOrientationPatient of this slice, from the frame's functional groups where multi-frame."""
        if self.frame_number is None:
            return [float(value) for value in self.dataset.ImageOrientationPatient]
        return [float(value) for value in _frame_attribute(self, "PlaneOrientationSequence", "ImageOrientationPatient")]

    def pixels(self) -> np.ndarray:
        """Return the stored pixel values of this slice, [rows, columns]."""
        array = self.dataset.pixel_array
        if self.frame_number is None:
            return array
        return array.reshape(-1, int(self.dataset.Rows), int(self.dataset.Columns))[self.frame_number - 1]

    def label(self) -> str:
        """Return a short name of the slice for pictures: "Im <InstanceNumber>" or "Fr <frame>"."""
        if self.frame_number is None:
            return f"Im {self.dataset.get('InstanceNumber', '?')}"
        return f"Fr {self.frame_number}"


def is_multiframe(ds: pydicom.Dataset) -> bool:
    """Return whether ``ds`` is a multi-frame image with functional groups, such as Enhanced MR (PS3.3 C.7.6.16)."""
    return "PerFrameFunctionalGroupsSequence" in ds


def _frame_attribute(source: SourceSlice, sequence: str, keyword: str) -> object:
    # A per-frame functional group overrides the shared one (PS3.3 C.7.6.16).
    ds = source.dataset
    frame_group = ds.PerFrameFunctionalGroupsSequence[source.frame_number - 1]
    shared = ds.get("SharedFunctionalGroupsSequence", [pydicom.Dataset()])[0]
    for group in (frame_group, shared):
        if sequence in group and len(group[sequence].value) and keyword in group[sequence][0]:
            return group[sequence][0][keyword].value
    raise ValueError(
        f"frame {source.frame_number} of CE-T1 instance {ds.SOPInstanceUID} has no {keyword} "
        f"in its per-frame or shared {sequence}; the source's functional groups are incomplete"
    )


def ordered_ce_t1_sources(
    result: PipelineResult, sources: Mapping[SequenceRole, Sequence[pydicom.Dataset]]
) -> list[SourceSlice]:
    """Return the CE-T1 image behind each slice of the segmentation mask, in slice order.

    One multi-frame instance may be the source of many slices, each with
    its frame number from ``result.segmentation.source_frame_numbers``.

    Raises
    ------
    ValueError
        If a CE-T1 instance that the mask lies on is not among ``sources``,
        or a slice's frame number does not fit its instance.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources.get(SequenceRole.CE_T1, ())}
    uids = result.segmentation.source_sop_instance_uids
    frame_numbers = _frame_numbers(result)
    ordered = []
    for index, (uid, frame_number) in enumerate(zip(uids, frame_numbers)):
        if uid not in by_uid:
            raise ValueError(
                f"CE-T1 instance {uid} of the segmentation is missing from sources; "
                "pass the headers of every CE-T1 instance the pipeline used"
            )
        ordered.append(_checked_slice(by_uid[uid], frame_number, index))
    return ordered


def _frame_numbers(result: PipelineResult) -> tuple[int | None, ...]:
    segmentation = result.segmentation
    count = len(segmentation.source_sop_instance_uids)
    if not segmentation.source_frame_numbers:
        return (None,) * count
    if len(segmentation.source_frame_numbers) != count:
        raise ValueError(
            f"segmentation has {len(segmentation.source_frame_numbers)} source frame numbers for "
            f"{count} source instances; give one frame number (or None) per mask slice"
        )
    return tuple(segmentation.source_frame_numbers)


def _checked_slice(ds: pydicom.Dataset, frame_number: int | None, index: int) -> SourceSlice:
    if not is_multiframe(ds):
        if frame_number not in (None, 1):
            raise ValueError(
                f"mask slice {index} names frame {frame_number} of CE-T1 instance {ds.SOPInstanceUID}, "
                "which is single-frame; set its source frame number to None"
            )
        return SourceSlice(ds, None)

    count = int(ds.NumberOfFrames)
    if frame_number is None or not 1 <= frame_number <= count:
        raise ValueError(
            f"mask slice {index} lies on multi-frame CE-T1 instance {ds.SOPInstanceUID} "
            f"(SOP class {ds.SOPClassUID.name}) but has frame number {frame_number}; "
            f"set result.segmentation.source_frame_numbers to its frame, 1 to {count}"
        )
    return SourceSlice(ds, int(frame_number))


def all_source_datasets(
    sources: Mapping[SequenceRole, Sequence[pydicom.Dataset]]
) -> list[pydicom.Dataset]:
    """Return every input dataset, CE-T1 first, for SR evidence."""
    roles = [SequenceRole.CE_T1, *[role for role in sources if role is not SequenceRole.CE_T1]]
    return [ds for role in roles for ds in sources.get(role, ())]


def specific_character_set(reference: pydicom.Dataset) -> str | list[str] | None:
    """Return the source's SpecificCharacterSet, so inherited names keep their encoding."""
    value = reference.get("SpecificCharacterSet")
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return list(value)


def contributing_equipment(options: WriterOptions) -> hd.ContributingEquipment:
    """Describe the node as processing equipment (PS3.3 C.7.5.1, Contributing Equipment Sequence)."""
    return hd.ContributingEquipment(
        manufacturer=options.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=options.manufacturer_model_name,
        software_versions=options.software_versions,
        device_serial_number=options.device_serial_number,
        institution_name=options.institution_name or None,
        station_name=options.station_name or None,
    )


def segmentation_model(result: PipelineResult) -> ModelIdentity:
    """Return the segmentation model's identity, or the first model when no kind matches."""
    if not result.models:
        raise ValueError("result.models is empty; the writers need the model identity to label outputs")
    for model in result.models:
        if "seg" in model.kind.lower():
            return model
    return result.models[0]


def model_label(model: ModelIdentity) -> str:
    """Return a short label for series descriptions: "<name> <version>", with "DEMO model" for demo models."""
    label = f"{model.name} {model.version}"
    return f"{label}, DEMO model" if model.is_demo else label


def provenance_statement(result: PipelineResult) -> str:
    """Return the statement that an algorithm produced the result, and what its models were trained on."""
    parts = []
    for model in result.models:
        text = f"{model.name} {model.version} ({model.kind}), trained on {model.training_data}"
        if model.intended_use:
            text += f"; intended use: {model.intended_use}"
        parts.append(text)
    statement = "Result produced by an algorithm without human review. Models: " + "; ".join(parts) + "."
    if result.is_demo:
        statement = f"{DEMO_WARNING}. Demo model trained on synthetic phantoms. " + statement
    return statement
