"""Helpers shared by the SEG, SR and Secondary Capture writers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

from inference.result import ModelIdentity, PipelineResult, SequenceRole

from .options import WriterOptions

DEMO_WARNING = "DEMO MODEL - NOT FOR CLINICAL USE"


def ordered_ce_t1_sources(
    result: PipelineResult, sources: Mapping[SequenceRole, Sequence[pydicom.Dataset]]
) -> list[pydicom.Dataset]:
    """Return the CE-T1 datasets in the slice order of the segmentation mask.

    Raises
    ------
    ValueError
        If a CE-T1 instance that the mask lies on is not among ``sources``.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources.get(SequenceRole.CE_T1, ())}
    ordered = []
    for uid in result.segmentation.source_sop_instance_uids:
        if uid not in by_uid:
            raise ValueError(
                f"CE-T1 instance {uid} of the segmentation is missing from sources; "
                "pass the headers of every CE-T1 instance the pipeline used"
            )
        ordered.append(by_uid[uid])
    return ordered


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
