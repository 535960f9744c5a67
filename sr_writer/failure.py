"""Short SR that informs the radiologist why no AI result was produced."""

from __future__ import annotations

import logging
from collections.abc import Collection

import highdicom as hd
import pydicom

from . import codes
from .common import contributing_equipment, specific_character_set
from .identity import OutputKind, allocate_series_numbers, stable_uid
from .options import WriterOptions
from .sr import (
    add_equipment_attributes,
    observation_context,
    outcome_group,
    qualitative_container,
    text_item,
)
from .validate import validate_output

logger = logging.getLogger(__name__)


def build_failure_report(
    reference: pydicom.Dataset,
    *,
    reason: str,
    hint: str,
    code: str,
    options: WriterOptions,
    job_key: str,
    existing_series_numbers: Collection[int] = (),
) -> pydicom.Dataset:
    """Build and validate a TID 1500-shaped SR stating that the AI result could not be produced.

    Parameters
    ----------
    reference : pydicom.Dataset
        Any instance of the study; its patient and study modules are copied
        and it is listed as evidence.
    reason : str
        What went wrong, for example "Required series T2 not received".
    hint : str
        What a radiologist or administrator can do about it.
    code : str
        The stable machine-readable reason, such as an InputError's code.
    options : WriterOptions
        Node identity.
    job_key : str
        The job's stable key; the same job and reason give the same UIDs.
    existing_series_numbers : collection of int
        SeriesNumbers the study already uses.

    Raises
    ------
    ValueError
        If ``reason`` is empty.
    OutputValidationError
        If the report fails validation.
    """
    if not reason.strip():
        raise ValueError("reason is empty; say why the result could not be produced")
    study_uid = str(reference.StudyInstanceUID)
    entropy = [study_uid, job_key, code, reason, OutputKind.FAILURE_REPORT.value]
    number = allocate_series_numbers(
        [OutputKind.FAILURE_REPORT], options.series_number_base, existing_series_numbers
    )[OutputKind.FAILURE_REPORT]

    # The report keeps the TID 1500 shape of the regular report: one group
    # states that no algorithm succeeded, and the reason goes into the
    # Qualitative Evaluations container as text.
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(options),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=[
            outcome_group(codes.NONE_SUCCEEDED, stable_uid(*entropy, "outcome"))
        ],
    )
    statements = [
        text_item(codes.FAILURE_REASON, reason),
        text_item(codes.FAILURE_CODE, code or "unknown"),
    ]
    if hint.strip():
        statements.append(text_item(codes.FAILURE_HINT, hint))
    report[0].ContentSequence.append(qualitative_container(statements))

    sr = hd.sr.ComprehensiveSR(
        evidence=[reference],
        content=report[0],
        series_instance_uid=stable_uid(*entropy, "series"),
        series_number=number,
        sop_instance_uid=stable_uid(*entropy, "instance"),
        instance_number=1,
        manufacturer=options.manufacturer,
        institution_name=options.institution_name or None,
        contributing_equipment=[contributing_equipment(options)],
        series_description="AI result not produced",
        specific_character_set=specific_character_set(reference),
        coding_schemes=[codes.private_scheme_item()],
    )
    add_equipment_attributes(sr, options)
    validate_output(sr)
    logger.info("built failure SR %s for study %s (code %s)", sr.SOPInstanceUID, study_uid, code)
    return sr
