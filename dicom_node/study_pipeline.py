"""The node's pipeline step: segmentation, radiomics and nomogram, then SEG and SR.

This is the one place where ``inference`` and ``sr_writer`` meet. The step
reads the chosen series from the spool, looks up clinical variables, runs
:func:`inference.pipeline.run_pipeline` and turns its result into validated
DICOM objects. A study that cannot be processed as sent gets a short SR that
states the reason, for the destinations that accept failure reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import pydicom

from config.settings import Settings
from db.states import OutputKind
from dicom_node.clinical_source import ClinicalSource
from dicom_node.pipeline_step import JobContext, OutputObject, StepOutcome
from inference.errors import InputError
from inference.model_package import load_segmentation_model
from inference.pipeline import PipelineOptions, run_pipeline
from inference.result import SequenceRole
from sr_writer import WriterOptions, build_failure_report, build_outputs
from sr_writer.validate import available_validators

logger = logging.getLogger(__name__)

# Output kind of each object the writers return, by SOP Class UID.
_KIND_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.66.4": OutputKind.SEG,
    "1.2.840.10008.5.1.4.1.1.88.33": OutputKind.SR,
    "1.2.840.10008.5.1.4.1.1.88.34": OutputKind.SR,
    "1.2.840.10008.5.1.4.1.1.88.22": OutputKind.SR,
    "1.2.840.10008.5.1.4.1.1.7": OutputKind.SECONDARY_CAPTURE,
    "1.2.840.10008.5.1.4.1.1.7.4": OutputKind.SECONDARY_CAPTURE,
}

_validators_checked = threading.Event()


def _node_version() -> str:
    try:
        return metadata.version("otscc-node")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def log_validator_availability() -> None:
    """Log once per process which output validators are installed."""
    if _validators_checked.is_set():
        return
    _validators_checked.set()
    available = available_validators()
    missing = sorted(name for name, present in available.items() if not present)
    if missing:
        logger.warning(
            "output validators not installed: %s; SEG and SR are checked with the others only. "
            "Install dicom3tools and dcmtk (scripts/install.sh does) for full validation",
            ", ".join(missing),
        )
    else:
        logger.info("output validators available: %s", ", ".join(sorted(available)))


class StudyPipeline:
    """The pipeline step the node runs for each complete study.

    Parameters
    ----------
    settings : Settings
        Model paths, pipeline options, the clinical source and destinations.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clinical = ClinicalSource(settings.clinical)
        self._options = PipelineOptions(
            register=settings.inference.register_series,
            batch_size=settings.inference.batch_size,
            min_component_mm3=settings.inference.min_component_mm3,
            radiomics_params=settings.inference.radiomics_params,
        )

    def warm_up(self) -> None:
        """Load the segmentation model now, so the first job does not pay for it."""
        started = time.monotonic()
        model = load_segmentation_model(self._settings.inference.segmentation_model)
        log_validator_availability()
        label = "DEMO model" if model.identity.is_demo else "model"
        logger.info(
            "segmentation %s %s %s loaded in %.1f s",
            label,
            model.identity.name,
            model.identity.version,
            time.monotonic() - started,
        )

    def run(self, context: JobContext) -> StepOutcome:
        """Run the pipeline on the study of ``context`` and write its DICOM objects."""
        log_validator_availability()
        series_files = {SequenceRole(role): list(item.paths) for role, item in context.series.items()}
        reference = _reference_header(series_files)
        try:
            return self._run(context, series_files, reference)
        except InputError as error:
            return self._input_failure(context, reference, error)

    def report_failure(
        self, context: JobContext, error: InputError, *, reference_path: Path | None = None
    ) -> StepOutcome:
        """Build the short SR for a job that failed on its input before it ran, such as a missing role.

        ``reference_path`` is any instance of the study, used when no series
        got a role.
        """
        series_files = {SequenceRole(role): list(item.paths) for role, item in context.series.items()}
        reference = _reference_header(series_files)
        if reference is None and reference_path is not None:
            reference = _prepare_source_header(pydicom.dcmread(reference_path, stop_before_pixels=True))
        return self._input_failure(context, reference, error)

    def _run(
        self,
        context: JobContext,
        series_files: Mapping[SequenceRole, Sequence[Path]],
        reference: pydicom.Dataset | None,
    ) -> StepOutcome:
        model = load_segmentation_model(self._settings.inference.segmentation_model)
        missing = [role.label for role in model.roles if role not in series_files]
        if missing:
            raise InputError(
                f"Required series {', '.join(missing)} not received for study {context.study_instance_uid}",
                code="missing_role",
                hint="send the missing series from the PACS, then retry the job",
            )

        clinical = self._clinical_values(reference)
        result = run_pipeline(
            series_files,
            segmentation_model=model,
            nomogram_model=self._settings.inference.nomogram_model,
            clinical=clinical.values,
            options=self._options,
        )
        if clinical.problems:
            result.notes.extend(f"Clinical source: {problem}" for problem in clinical.problems)

        started = time.monotonic()
        sources = _read_sources(series_files, with_pixels=self._wants_secondary_capture())
        datasets = build_outputs(
            result,
            sources,
            self._writer_options(context),
            existing_series_numbers=_series_numbers(sources),
            role_evidence=dict(context.role_evidence),
        )
        stage_seconds = {**result.stage_seconds, "write": time.monotonic() - started}

        outputs = [OutputObject(_kind_of(ds), ds) for ds in datasets]
        summary = result.summary()
        summary["clinical_source"] = clinical.source
        summary["outputs"] = {output.kind.value: str(output.dataset.SOPInstanceUID) for output in outputs}
        return StepOutcome(outputs=outputs, result_summary=summary, stage_seconds=stage_seconds)

    def _input_failure(
        self, context: JobContext, reference: pydicom.Dataset | None, error: InputError
    ) -> StepOutcome:
        wanted = any(destination.send_failure_report for destination in self._settings.destinations)
        if reference is None or not wanted:
            return StepOutcome(input_error=error)

        report = build_failure_report(
            reference,
            reason=str(error),
            hint=error.hint,
            code=error.code,
            options=self._writer_options(context),
            job_key=f"{context.study_instance_uid}/{context.run_number}/{error.code}",
        )
        return StepOutcome(
            outputs=[OutputObject(OutputKind.FAILURE_SR, report)],
            result_summary={"failure_report": str(report.SOPInstanceUID), "reason_code": error.code},
            input_error=error,
        )

    def _clinical_values(self, reference: pydicom.Dataset | None):
        accession = str(reference.get("AccessionNumber", "") or "") if reference is not None else ""
        patient_id = str(reference.get("PatientID", "") or "") if reference is not None else ""
        return self._clinical.lookup(accession_number=accession or None, patient_id=patient_id or None)

    def _wants_secondary_capture(self) -> bool:
        return any(destination.secondary_capture for destination in self._settings.destinations)

    def _writer_options(self, context: JobContext) -> WriterOptions:
        destinations = self._settings.destinations
        # NOTE: one SEG is written per job. Empty frames are omitted only when
        # every destination sets omit_empty_seg_frames; a mix of settings keeps them for all.
        omit_empty = bool(destinations) and all(d.omit_empty_seg_frames for d in destinations)
        return WriterOptions(
            software_versions=_node_version(),
            station_name=self._settings.node.ae_title,
            omit_empty_frames=omit_empty,
            secondary_capture=self._wants_secondary_capture(),
            superseded=[
                (prior.sop_class_uid, prior.sop_instance_uid, prior.series_instance_uid)
                for prior in context.superseded_outputs
            ],
        )


# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1,
# C.7.2.1) that the writers copy from the source images. Some senders leave
# them out; the outputs then carry them empty, as Type 2 allows.
_TYPE_2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _prepare_source_header(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in _TYPE_2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")

    # A top-level sequence with no items (some scanners send an empty
    # ProcedureCodeSequence) is invalid in the Type 3 attributes the writers
    # copy, and the validators then reject the outputs. These headers are
    # read for the outputs only, so every empty top-level sequence is
    # dropped here.
    for element in list(ds):
        if element.VR == "SQ" and len(element.value) == 0:
            del ds[element.tag]
    return ds


def _reference_header(series_files: Mapping[SequenceRole, Sequence[Path]]) -> pydicom.Dataset | None:
    # Any instance of the study gives the patient and study modules; the
    # CE-T1 is preferred because the outputs lie on it.
    for role in (SequenceRole.CE_T1, SequenceRole.T2, SequenceRole.T1):
        for path in series_files.get(role, ()):
            try:
                return _prepare_source_header(pydicom.dcmread(path, stop_before_pixels=True))
            except (OSError, pydicom.errors.InvalidDicomError):
                continue
    return None


def _read_sources(
    series_files: Mapping[SequenceRole, Sequence[Path]], *, with_pixels: bool
) -> dict[SequenceRole, list[pydicom.Dataset]]:
    sources: dict[SequenceRole, list[pydicom.Dataset]] = {}
    for role, paths in series_files.items():
        read_pixels = with_pixels and role is SequenceRole.CE_T1
        sources[role] = [
            _prepare_source_header(pydicom.dcmread(path, stop_before_pixels=not read_pixels)) for path in paths
        ]
    return sources


def _series_numbers(sources: Mapping[SequenceRole, Sequence[pydicom.Dataset]]) -> set[int]:
    numbers = set()
    for datasets in sources.values():
        for ds in datasets[:1]:
            if ds.get("SeriesNumber") not in (None, ""):
                numbers.add(int(ds.SeriesNumber))
    return numbers


def _kind_of(ds: pydicom.Dataset) -> OutputKind:
    kind = _KIND_BY_SOP_CLASS.get(str(ds.SOPClassUID))
    if kind is None:
        raise ValueError(f"the writers returned an object of SOP class {ds.SOPClassUID}, which the node does not send")
    return kind
