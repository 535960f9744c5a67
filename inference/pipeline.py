"""The whole inference pipeline for one study: files in, :class:`PipelineResult` out.

Stages, each timed into ``PipelineResult.stage_seconds``:

``load``
    Load the models and build a volume from each series.
``align``
    Bring every other series onto the reference grid (CE-T1 where sent).
``segment``
    Predict the tumour mask and measure it.
``radiomics``
    Extract the tumour's radiomics features.
``nomogram``
    Score the nomogram with the features and clinical variables.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.alignment import AlignmentMethod, align_series
from inference.clinical import clinical_from_header
from inference.errors import InputError, ModelPackageError
from inference.geometry import grid_geometry
from inference.model_package import LoadedSegmentationModel, load_segmentation_model
from inference.nomogram import NomogramModel
from inference.radiomics import extract_tumour_features
from inference.result import (
    AlignmentRecord,
    NomogramResult,
    PipelineResult,
    RadiomicsResult,
    Segmentation,
    SeriesUsed,
    SequenceRole,
)
from inference.segment import (
    DEFAULT_MIN_COMPONENT_MM3,
    max_diameter_mm,
    predict_mask,
    tumour_volume_mm3,
)
from inference.volume import SeriesVolume, load_series

logger = logging.getLogger(__name__)

STAGES = ("load", "align", "segment", "radiomics", "nomogram")

RADIOMICS_NO_TUMOUR = "no_tumour"
RADIOMICS_NOT_COMPUTED = "not_computed"


@dataclass(frozen=True)
class PipelineOptions:
    """Settings of one pipeline run.

    Attributes
    ----------
    register : bool
        Rigidly register each series to the reference after resampling by
        patient coordinates.
    batch_size : int
        Slices per forward pass of the segmentation model.
    min_component_mm3 : float
        Smallest tumour volume kept, in mm3.
    radiomics_params : Path or None
        pyradiomics parameter file; None uses the packaged default.
    """

    register: bool = False
    batch_size: int = 8
    min_component_mm3: float = DEFAULT_MIN_COMPONENT_MM3
    radiomics_params: Path | None = None


def run_pipeline(
    series_files: Mapping[SequenceRole, Sequence[Path]],
    *,
    segmentation_model: Path | LoadedSegmentationModel,
    nomogram_model: Path | NomogramModel | None = None,
    clinical: Mapping[str, object] | None = None,
    options: PipelineOptions | None = None,
) -> PipelineResult:
    """Segment the tumour of one study, extract radiomics and score the nomogram.

    Parameters
    ----------
    series_files : mapping of SequenceRole to sequence of Path
        Files of each series of the study. Every role the segmentation
        model's manifest lists is required; other series are aligned and
        passed to radiomics.
    segmentation_model : Path or LoadedSegmentationModel
        A model package folder or an already loaded package.
    nomogram_model : Path or NomogramModel or None
        A nomogram model file or loaded model; None skips the nomogram.
    clinical : mapping of str to object, optional
        Clinical variables from the clinic. They take precedence over the
        age and sex read from the DICOM header, except where a value is None.
    options : PipelineOptions, optional
        Run settings; defaults when None.

    Returns
    -------
    PipelineResult
        With an empty segmentation, radiomics status ``"no_tumour"`` and no
        nomogram result when no tumour was found.

    Raises
    ------
    InputError
        If a series or a model cannot be used as sent.
    """
    options = options or PipelineOptions()
    timings: dict[str, float] = {}
    notes: list[str] = []

    with _timed(timings, "load"):
        model = _segmentation_model(segmentation_model)
        nomogram = _nomogram_model(nomogram_model)
        volumes = _load_volumes(series_files, model)
    reference_role = _reference_role(volumes, model)
    reference = volumes[reference_role]
    study_uid = _study_uid(volumes)
    for volume in volumes.values():
        notes.extend(volume.notes)

    with _timed(timings, "align"):
        images, alignment = _align(volumes, reference_role, options, notes)

    with _timed(timings, "segment"):
        notes.extend(_orientation_notes(reference, reference_role))
        mask = predict_mask(
            model,
            {role: images[role] for role in model.roles},
            batch_size=options.batch_size,
            min_component_mm3=options.min_component_mm3,
        )
        segmentation = _segmentation(mask, reference)

    with _timed(timings, "radiomics"):
        radiomics = _radiomics(images, segmentation, reference.image, options)

    with _timed(timings, "nomogram"):
        nomogram_result = _score_nomogram(nomogram, radiomics, segmentation, reference, clinical)

    if segmentation.is_empty:
        notes.append("No tumour was found, so no radiomics or nomogram result was computed.")
    models = [model.identity] + ([nomogram.identity] if nomogram is not None else [])
    logger.info(
        "Pipeline finished for study %s: tumour %s, %.1f mm3, stages %s",
        study_uid,
        "found" if not segmentation.is_empty else "not found",
        segmentation.volume_mm3,
        {k: round(v, 2) for k, v in timings.items()},
    )
    return PipelineResult(
        study_instance_uid=study_uid,
        series={role: _series_used(role, volume) for role, volume in volumes.items()},
        segmentation=segmentation,
        radiomics=radiomics,
        nomogram=nomogram_result,
        models=models,
        alignment=alignment,
        notes=notes,
        stage_seconds=timings,
    )


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start


def _segmentation_model(model: Path | LoadedSegmentationModel) -> LoadedSegmentationModel:
    if isinstance(model, LoadedSegmentationModel):
        return model
    return load_segmentation_model(Path(model))


def _nomogram_model(model: Path | NomogramModel | None) -> NomogramModel | None:
    if model is None or isinstance(model, NomogramModel):
        return model
    try:
        return NomogramModel.load(Path(model))
    except FileNotFoundError as exc:
        raise ModelPackageError(f"nomogram model file {model} was not found") from exc
    except ValueError as exc:
        raise ModelPackageError(f"nomogram model file {model} is invalid: {exc}") from exc


def _load_volumes(
    series_files: Mapping[SequenceRole, Sequence[Path]], model: LoadedSegmentationModel
) -> dict[SequenceRole, SeriesVolume]:
    missing = [role.value for role in model.roles if not series_files.get(role)]
    if missing:
        raise InputError(
            f"the study lacks series {missing}, which the segmentation model "
            f"{model.manifest.name} needs",
            code="missing_series",
            hint="send the study with every series the model's manifest lists",
        )
    return {role: load_series(list(paths)) for role, paths in series_files.items() if paths}


def _reference_role(
    volumes: Mapping[SequenceRole, SeriesVolume], model: LoadedSegmentationModel
) -> SequenceRole:
    # The mask lives on the CE-T1 grid, because the SEG references the
    # CE-T1 instances; a model without CE-T1 uses its first channel's grid.
    if SequenceRole.CE_T1 in volumes:
        return SequenceRole.CE_T1
    return model.roles[0]


def _study_uid(volumes: Mapping[SequenceRole, SeriesVolume]) -> str:
    uids = {str(v.first_dataset.get("StudyInstanceUID", "")) for v in volumes.values()}
    if len(uids) != 1 or "" in uids:
        raise InputError(
            f"the series belong to {len(uids)} studies ({sorted(uids)}); "
            "pass the series of exactly one study",
            code="mixed_studies",
        )
    return uids.pop()


def _align(
    volumes: Mapping[SequenceRole, SeriesVolume],
    reference_role: SequenceRole,
    options: PipelineOptions,
    notes: list[str],
) -> tuple[dict[SequenceRole, sitk.Image], list[AlignmentRecord]]:
    reference = volumes[reference_role]
    images = {reference_role: reference.image}
    records = []
    for role, volume in volumes.items():
        if role is reference_role:
            continue
        images[role], record = align_series(volume, reference, role, register=options.register)
        records.append(record)
        if record.method == AlignmentMethod.RESAMPLED_DIFFERENT_FRAME.value:
            notes.append(
                f"The {role.label} series has a different frame of reference than the "
                f"{reference_role.label} series and was aligned by patient coordinates only."
            )
    return images, records


def _orientation_notes(reference: SeriesVolume, role: SequenceRole) -> list[str]:
    # The model reads axial slices; segment.orient_for_model reorders the
    # voxels of any other orientation into axial slices without interpolation.
    normal = np.array(reference.image.GetDirection()).reshape(3, 3)[:, 2]
    if int(np.argmax(np.abs(normal))) == 2:
        return []
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.image.GetDirection())
    return [
        f"The {role.label} series is not axial (orientation {code}); the model segmented "
        "axial reformats of it, so through-plane detail is limited by its slice spacing."
    ]


def _segmentation(mask: np.ndarray, reference: SeriesVolume) -> Segmentation:
    geometry = grid_geometry(reference.image)
    return Segmentation(
        mask=mask,
        geometry=geometry,
        source_sop_instance_uids=reference.sop_instance_uids,
        source_frame_numbers=reference.frame_numbers,
        volume_mm3=tumour_volume_mm3(mask, geometry.spacing),
        max_diameter_mm=max_diameter_mm(mask, geometry),
    )


def _radiomics(
    images: Mapping[SequenceRole, sitk.Image],
    segmentation: Segmentation,
    reference_image: sitk.Image,
    options: PipelineOptions,
) -> RadiomicsResult:
    if segmentation.is_empty:
        return RadiomicsResult(status=RADIOMICS_NO_TUMOUR, message="The segmentation found no tumour.")
    if SequenceRole.CE_T1 not in images:
        return RadiomicsResult(
            status=RADIOMICS_NOT_COMPUTED,
            message="Radiomics needs the CE-T1 series, which the study did not include.",
        )
    mask_image = sitk.GetImageFromArray(segmentation.mask)
    mask_image.CopyInformation(reference_image)
    return extract_tumour_features(images, mask_image, params_path=options.radiomics_params)


def _score_nomogram(
    nomogram: NomogramModel | None,
    radiomics: RadiomicsResult,
    segmentation: Segmentation,
    reference: SeriesVolume,
    clinical: Mapping[str, object] | None,
) -> NomogramResult | None:
    if nomogram is None or segmentation.is_empty:
        return None
    values = clinical_from_header(reference.first_dataset)
    for name, value in (clinical or {}).items():
        if value is not None or name not in values:
            values[name] = value
    return nomogram.score(radiomics.features, values)


def _series_used(role: SequenceRole, volume: SeriesVolume) -> SeriesUsed:
    return SeriesUsed(
        role=role,
        series_instance_uid=volume.series_instance_uid,
        sop_instance_uids=volume.sop_instance_uids,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        series_description=volume.series_description,
    )
