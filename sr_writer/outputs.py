"""Entry point of the writers: one run's result in, validated DICOM objects out."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

import pydicom

from inference.result import PipelineResult, SequenceRole

from .common import all_source_datasets, ordered_ce_t1_sources
from .identity import OutputKind, allocate_series_numbers, derive_uids, input_entropy
from .options import WriterOptions
from .secondary_capture import build_secondary_capture
from .seg import build_segmentation
from .sr import build_measurement_report
from .validate import validate_output

logger = logging.getLogger(__name__)


def build_outputs(
    result: PipelineResult,
    sources: Mapping[SequenceRole, Sequence[pydicom.Dataset]],
    options: WriterOptions,
    *,
    existing_series_numbers: Collection[int] = (),
    role_evidence: Mapping[str, str] | None = None,
) -> list[pydicom.Dataset]:
    """Build and validate the SEG, the SR and, if enabled, the Secondary Capture of one run.

    Parameters
    ----------
    result : PipelineResult
        The pipeline's result for one study.
    sources : mapping of SequenceRole to sequence of pydicom.Dataset
        The input series' datasets. The CE-T1 datasets must include every
        instance in ``result.segmentation.source_sop_instance_uids``, with
        pixel data when the Secondary Capture is enabled.
    options : WriterOptions
        Node identity and output choices.
    existing_series_numbers : collection of int
        SeriesNumbers the study already uses; the outputs avoid them.
    role_evidence : mapping of str to str, optional
        Why each input series was given its role, keyed by role label;
        written into the SR as text.

    Returns
    -------
    list of pydicom.Dataset
        The SEG (absent when no tumour was found), the SR, then the
        Secondary Capture when enabled and a tumour was found, each already
        validated.

    Raises
    ------
    ValueError
        If ``sources`` lacks a CE-T1 instance the mask lies on.
    OutputValidationError
        If any object fails validation; no object should then be sent.
    """
    ce_t1 = ordered_ce_t1_sources(result, sources)
    tumour_found = not result.segmentation.is_empty
    kinds = _kinds(tumour_found, options)
    numbers = allocate_series_numbers(kinds, options.series_number_base, existing_series_numbers)
    entropy = input_entropy(result)
    outputs: list[pydicom.Dataset] = []

    seg = None
    if tumour_found:
        series_uid, instance_uid = derive_uids(entropy, OutputKind.SEG)
        seg = build_segmentation(
            result, ce_t1, options,
            series_instance_uid=series_uid,
            sop_instance_uid=instance_uid,
            series_number=numbers[OutputKind.SEG],
        )
        outputs.append(seg)

    series_uid, instance_uid = derive_uids(entropy + _sr_content_entropy(result), OutputKind.SR)
    outputs.append(
        build_measurement_report(
            result, all_source_datasets(sources), seg, options,
            series_instance_uid=series_uid,
            sop_instance_uid=instance_uid,
            series_number=numbers[OutputKind.SR],
            role_evidence=role_evidence,
        )
    )

    if options.secondary_capture and tumour_found:
        series_uid, instance_uid = derive_uids(entropy, OutputKind.SECONDARY_CAPTURE)
        outputs.append(
            build_secondary_capture(
                result, ce_t1, options,
                series_instance_uid=series_uid,
                sop_instance_uid=instance_uid,
                series_number=numbers[OutputKind.SECONDARY_CAPTURE],
            )
        )

    for ds in outputs:
        validate_output(ds)
    return outputs


def _kinds(tumour_found: bool, options: WriterOptions) -> list[OutputKind]:
    kinds = [OutputKind.SEG] if tumour_found else []
    kinds.append(OutputKind.SR)
    if options.secondary_capture and tumour_found:
        kinds.append(OutputKind.SECONDARY_CAPTURE)
    return kinds


def _sr_content_entropy(result: PipelineResult) -> list[str]:
    # The SR also reports the clinical variables, which can change while the
    # images stay the same; a report with other content needs another UID.
    nomogram = result.nomogram
    if nomogram is None:
        return ["nomogram=none"]
    probability = "none" if nomogram.probability is None else f"{nomogram.probability:.6f}"
    entropy = [
        f"probability={probability}",
        "missing=" + ",".join(sorted(nomogram.missing_inputs)),
        "imputed=" + ",".join(sorted(nomogram.imputed_inputs)),
    ]
    # Added only when present, so that earlier runs keep their UIDs.
    if nomogram.invalid_inputs:
        entropy.append("invalid=" + ",".join(sorted(nomogram.invalid_inputs)))
    return entropy
