"""TID 1500 Measurement Report of the tumour and the nomogram (PS3.16 TID 1500).

The report has one TID 1411 volumetric measurement group that references the
tumour segment of the SEG, with the tumour volume, the maximum 3D diameter,
the radiomics score, the probability of cervical lymph node metastasis and
its risk group. Statements without a coded value (input series, missing
clinical variables, provenance) are TEXT items in the report's "Qualitative
Evaluations" container (TID 1500 row 12).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import highdicom as hd
import pydicom
from pydicom.sr.coding import Code
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
)

from inference.result import ModelIdentity, NomogramResult, PipelineResult, SequenceRole

from . import codes
from .common import (
    contributing_equipment,
    is_multiframe,
    model_label,
    provenance_statement,
    segmentation_model,
    specific_character_set,
)
from .identity import device_uid, stable_uid
from .options import WriterOptions
from .seg import SEGMENT_NUMBER, TRACKING_ID, tracking_uid

logger = logging.getLogger(__name__)

SR_STORAGE_CLASSES = frozenset(
    {ComprehensiveSRStorage, EnhancedSRStorage, Comprehensive3DSRStorage}
)


def observation_context(options: WriterOptions) -> hd.sr.ObservationContext:
    """Build the observer context: the node as a device observer (TID 1004)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(options),
        name=options.station_name or options.manufacturer_model_name,
        manufacturer_name=options.manufacturer,
        model_name=options.manufacturer_model_name,
        serial_number=options.device_serial_number,
    )
    observer = hd.sr.ObserverContext(
        observer_type=pydicom.sr.codedict.codes.DCM.Device,
        observer_identifying_attributes=device,
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def text_item(name: Code, value: str) -> hd.sr.TextContentItem:
    """Build a TEXT content item for the Qualitative Evaluations container."""
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def qualitative_container(items: Sequence[pydicom.Dataset]) -> hd.sr.ContainerContentItem:
    """Wrap coded and text statements in TID 1500's "Qualitative Evaluations" container."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def processing_summary(value: Code) -> hd.sr.CodeContentItem:
    """Build the CAD processing summary item (CID 6047) for the Qualitative Evaluations container."""
    return hd.sr.CodeContentItem(
        name=codes.PROCESSING_SUMMARY,
        value=value,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def outcome_group(
    summary: Code, tracking_uid_value: str, algorithm: hd.sr.AlgorithmIdentification | None = None
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Build a TID 1501 group that states the algorithm's outcome when there is no segment to measure.

    highdicom and TID 1500 need at least one measurement group; without a
    tumour the group carries only the CID 6047 processing summary.
    """
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid_value, identifier="Algorithm outcome"
        ),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.TONGUE)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.PROCESSING_SUMMARY, summary)],
    )


def build_measurement_report(
    result: PipelineResult,
    evidence: Sequence[pydicom.Dataset],
    seg: pydicom.Dataset | None,
    options: WriterOptions,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    role_evidence: Mapping[str, str] | None = None,
) -> hd.sr.ComprehensiveSR:
    """Build the Comprehensive SR with the TID 1500 report of one run.

    Parameters
    ----------
    result : PipelineResult
        The run to report.
    evidence : sequence of pydicom.Dataset
        Every input dataset the run used (headers suffice).
    seg : pydicom.Dataset or None
        The tumour SEG; None when no tumour was found.
    options : WriterOptions
        Node identity and the superseded results.
    series_instance_uid, sop_instance_uid : str
        UIDs of the new object.
    series_number : int
        SeriesNumber of the new series.
    role_evidence : mapping of str to str, optional
        Why each input series was given its role, keyed by role label.
    """
    if seg is None:
        group = outcome_group(
            _summary_code(result),
            stable_uid(sop_instance_uid, "outcome"),
            _algorithm(segmentation_model(result)),
        )
    else:
        group = _measurement_group(result, seg)
    # The Image Library (TID 1600) lists the CE-T1 images the tumour was
    # segmented on, as dcmqi's reports do for their source images.
    ce_t1_series = result.series[SequenceRole.CE_T1].series_instance_uid
    library_images = [ds for ds in evidence if ds.SeriesInstanceUID == ce_t1_series]
    with_multiframe = any(is_multiframe(ds) for ds in library_images)
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(options),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=[group],
        referenced_images=None if with_multiframe else library_images or None,
    )
    if with_multiframe:
        insert_image_library(report[0], library_images)
    statements = _statements(result, role_evidence or {}, options)
    report[0].ContentSequence.append(qualitative_container(statements))

    all_evidence = list(evidence) if seg is None else [seg, *evidence]
    sr = hd.sr.ComprehensiveSR(
        evidence=all_evidence,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=options.manufacturer,
        institution_name=options.institution_name or None,
        previous_versions=_previous_versions(result, options) or None,
        contributing_equipment=[contributing_equipment(options)],
        series_description=f"AI tumour report ({model_label(segmentation_model(result))})"[:64],
        specific_character_set=specific_character_set(all_evidence[0]),
        coding_schemes=[codes.private_scheme_item()],
    )
    add_equipment_attributes(sr, options)
    logger.info(
        "built SR %s for study %s (tumour found: %s)",
        sop_instance_uid, result.study_instance_uid, seg is not None,
    )
    return sr


def insert_image_library(root: pydicom.Dataset, images: Sequence[pydicom.Dataset]) -> None:
    """Insert a TID 1600 Image Library that may list multi-frame images before the Imaging Measurements.

    highdicom 0.28 describes every library image with the top-level
    PixelSpacing and ImagePositionPatient of a single-frame image (TID
    1604), which an Enhanced MR instance keeps per frame in functional
    groups. A multi-frame entry therefore carries only the descriptors that
    hold for the whole instance: modality, frame of reference, rows and
    columns (TID 1602).
    """
    library = hd.sr.ContainerContentItem(
        name=pydicom.sr.codedict.codes.DCM.ImageLibrary,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    library.ContentSequence = hd.sr.ContentSequence(
        [_library_group(frame_uid, group) for frame_uid, group in _by_frame_of_reference(images).items()]
    )
    # The library goes where highdicom puts its own: just before the
    # Imaging Measurements container.
    position = next(
        (
            index for index, item in enumerate(root.ContentSequence)
            if item.ConceptNameCodeSequence[0].CodeValue == codes.IMAGING_MEASUREMENTS.value
        ),
        len(root.ContentSequence),
    )
    root.ContentSequence.insert(position, library)


def _by_frame_of_reference(images: Sequence[pydicom.Dataset]) -> dict[str, list[pydicom.Dataset]]:
    groups: dict[str, list[pydicom.Dataset]] = {}
    for ds in images:
        groups.setdefault(str(ds.get("FrameOfReferenceUID", "")), []).append(ds)
    return groups


def _library_group(frame_of_reference_uid: str, images: Sequence[pydicom.Dataset]) -> hd.sr.ContainerContentItem:
    group = hd.sr.ContainerContentItem(
        name=pydicom.sr.codedict.codes.DCM.ImageLibraryGroup,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    items: list[pydicom.Dataset] = []
    if frame_of_reference_uid:
        items.append(
            hd.sr.UIDRefContentItem(
                name=pydicom.sr.codedict.codes.DCM.FrameOfReferenceUID,
                value=frame_of_reference_uid,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            )
        )
    items.extend(_library_entry(ds) for ds in images)
    group.ContentSequence = hd.sr.ContentSequence(items)
    return group


def _library_entry(ds: pydicom.Dataset) -> hd.sr.ImageContentItem:
    entry = hd.sr.ImageContentItem(
        name=codes.LIBRARY_SOURCE,
        referenced_sop_class_uid=str(ds.SOPClassUID),
        referenced_sop_instance_uid=str(ds.SOPInstanceUID),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    if is_multiframe(ds):
        entry.ContentSequence = hd.sr.ContentSequence(_multiframe_descriptors(ds))
    else:
        entry.ContentSequence = hd.sr.ContentSequence(list(hd.sr.ImageLibraryEntryDescriptors(ds)))
    return entry


def _multiframe_descriptors(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    modality = str(ds.get("Modality", ""))
    if modality not in codes.MODALITIES:
        raise ValueError(
            f"CE-T1 instance {ds.SOPInstanceUID} has Modality {modality!r}; "
            "the CE-T1 series must be MR"
        )
    context = hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
    pixels = Code("{pixels}", "UCUM", "Pixels")
    descriptors: list[pydicom.Dataset] = [
        hd.sr.CodeContentItem(
            name=pydicom.sr.codedict.codes.DCM.Modality, value=codes.MODALITIES[modality], relationship_type=context
        )
    ]
    if "FrameOfReferenceUID" in ds:
        descriptors.append(
            hd.sr.UIDRefContentItem(
                name=pydicom.sr.codedict.codes.DCM.FrameOfReferenceUID,
                value=str(ds.FrameOfReferenceUID),
                relationship_type=context,
            )
        )
    descriptors.extend(
        hd.sr.NumContentItem(name=name, value=int(value), unit=pixels, relationship_type=context)
        for name, value in (
            (pydicom.sr.codedict.codes.DCM.PixelDataRows, ds.Rows),
            (pydicom.sr.codedict.codes.DCM.PixelDataColumns, ds.Columns),
        )
    )
    return descriptors


def add_equipment_attributes(ds: pydicom.Dataset, options: WriterOptions) -> None:
    """Set the General Equipment attributes that highdicom's SR constructor leaves out."""
    ds.ManufacturerModelName = options.manufacturer_model_name
    ds.DeviceSerialNumber = options.device_serial_number
    ds.SoftwareVersions = options.software_versions
    if options.station_name:
        ds.StationName = options.station_name


def _model_of_kind(result: PipelineResult, word: str) -> ModelIdentity:
    for model in result.models:
        if word in model.kind.lower():
            return model
    return segmentation_model(result)


def _algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version)


def _measurement_group(
    result: PipelineResult, seg: pydicom.Dataset
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    seg_algorithm = _algorithm(segmentation_model(result))
    measurements = [
        hd.sr.Measurement(
            name=codes.VOLUME,
            value=float(result.segmentation.volume_mm3),
            unit=codes.UNIT_MM3,
            method=codes.VOLUME_METHOD,
            algorithm_id=seg_algorithm,
        ),
        hd.sr.Measurement(
            name=codes.DIAMETER,
            value=float(result.segmentation.max_diameter_mm),
            unit=codes.UNIT_MM,
            derivation=codes.MAXIMUM,
            algorithm_id=seg_algorithm,
        ),
    ]
    evaluations = []
    if result.nomogram is not None:
        nomogram_algorithm = _algorithm(_model_of_kind(result, "nomogram"))
        measurements.extend(_nomogram_measurements(result.nomogram, nomogram_algorithm))
        risk = _risk_code(result.nomogram.risk_group)
        if risk is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(codes.NODAL_METASTASIS_RISK, risk))

    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(str(seg.SOPInstanceUID)), identifier=TRACKING_ID
        ),
        referenced_segment=_referenced_segment(result, seg),
        finding_type=codes.TUMOUR_TYPE,
        finding_category=codes.TUMOUR_CATEGORY,
        algorithm_id=seg_algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.TONGUE)],
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def _referenced_segment(result: PipelineResult, seg: pydicom.Dataset) -> hd.sr.ReferencedSegment:
    # The whole segment is meant, so no frame numbers; the source series is
    # named as in dcmqi's TID 1500 documents. highdicom 0.28's
    # ReferencedSegment.from_segmentation fails on a SEG whose only segment
    # is identified in the shared functional groups, so the item is built
    # from its parts.
    source_series = result.series[SequenceRole.CE_T1].series_instance_uid
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=SEGMENT_NUMBER,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series),
    )


def _nomogram_measurements(
    nomogram: NomogramResult, algorithm: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    measurements = []
    if nomogram.radiomics_score is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.RADIOMICS_SCORE,
                value=float(nomogram.radiomics_score),
                unit=codes.UNIT_NONE,
                algorithm_id=algorithm,
            )
        )
    if nomogram.probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.NODAL_METASTASIS_PROBABILITY,
                value=100.0 * float(nomogram.probability),
                unit=codes.UNIT_PERCENT,
                algorithm_id=algorithm,
            )
        )
        measurements.append(
            hd.sr.Measurement(
                name=codes.NODAL_METASTASIS_CUTOFF,
                value=100.0 * float(nomogram.cutoff),
                unit=codes.UNIT_PERCENT,
                algorithm_id=algorithm,
            )
        )
    return measurements


def _risk_code(risk_group: str | None) -> Code | None:
    if risk_group is None:
        return None
    normalised = risk_group.strip().lower()
    if normalised.startswith("high"):
        return codes.HIGH_RISK
    if normalised.startswith("low"):
        return codes.LOW_RISK
    raise ValueError(
        f"risk_group {risk_group!r} is neither 'high' nor 'low'; "
        "the nomogram must report one of the two groups at its cutoff"
    )


def _summary_code(result: PipelineResult) -> Code:
    tumour_found = not result.segmentation.is_empty
    nomogram_done = result.nomogram is not None and result.nomogram.probability is not None
    if tumour_found:
        return codes.ALL_SUCCEEDED_WITH_FINDINGS if nomogram_done else codes.NOT_ALL_SUCCEEDED_WITH_FINDINGS
    return codes.ALL_SUCCEEDED_WITHOUT_FINDINGS


def _statements(
    result: PipelineResult, role_evidence: Mapping[str, str], options: WriterOptions
) -> list[pydicom.Dataset]:
    items: list[pydicom.Dataset] = []
    if result.segmentation.is_empty:
        items.append(text_item(codes.COMMENT, "No tumour was found by the segmentation model."))
    else:
        items.append(processing_summary(_summary_code(result)))
    for role, used in result.series.items():
        description = f" ({used.series_description})" if used.series_description else ""
        items.append(text_item(codes.INPUT_SERIES, f"{role.label}: {used.series_instance_uid}{description}"))
    for role, evidence in sorted(role_evidence.items()):
        items.append(text_item(codes.ROLE_EVIDENCE, f"{role}: {evidence}"))
    if result.nomogram is not None:
        items.extend(_clinical_input_statements(result.nomogram))
    if result.radiomics.status != "ok" and result.radiomics.message:
        items.append(text_item(codes.COMMENT, f"Radiomics: {result.radiomics.message}"))
    items.extend(text_item(codes.COMMENT, note) for note in result.notes)
    items.extend(
        text_item(codes.REPLACED_OBJECT, f"{item.sop_class_uid} {item.sop_instance_uid}")
        for item in options.superseded_objects
    )
    items.append(text_item(codes.COMMENT, provenance_statement(result)))
    return items


def _clinical_input_statements(nomogram: NomogramResult) -> list[pydicom.Dataset]:
    # NomogramResult counts invalid inputs as missing too, so they appear
    # under both concepts: "missing" means the value was not used, and
    # "invalid" gives the reason.
    items = [text_item(codes.MISSING_INPUT, name) for name in nomogram.missing_inputs]
    items.extend(text_item(codes.INVALID_INPUT, name) for name in nomogram.invalid_inputs)
    items.extend(text_item(codes.IMPUTED_INPUT, name) for name in nomogram.imputed_inputs)
    if nomogram.probability is None:
        items.append(
            text_item(
                codes.COMMENT,
                "No nodal metastasis probability: a required clinical variable is missing or invalid.",
            )
        )
    elif nomogram.imputed_inputs:
        items.append(
            text_item(
                codes.COMMENT,
                "The nodal metastasis probability was computed with imputed values for: "
                + ", ".join(nomogram.imputed_inputs) + ".",
            )
        )
    return items


def _previous_versions(result: PipelineResult, options: WriterOptions) -> list[pydicom.Dataset]:
    # PredecessorDocumentsSequence (PS3.3 C.17.2) may list only SR documents,
    # so superseded SEGs are named in the Qualitative Evaluations text alone.
    previous = []
    for item in options.superseded_objects:
        if item.sop_class_uid not in SR_STORAGE_CLASSES:
            continue
        stub = pydicom.Dataset()
        stub.SOPClassUID = item.sop_class_uid
        stub.SOPInstanceUID = item.sop_instance_uid
        stub.SeriesInstanceUID = item.series_instance_uid
        stub.StudyInstanceUID = result.study_instance_uid
        previous.append(stub)
    return previous
