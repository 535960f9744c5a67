"""Typed result of one pipeline run, the contract between inference and the writers.

``sr_writer`` turns a :class:`PipelineResult` into DICOM SEG, SR and Secondary
Capture objects. The job runner stores a JSON summary of it
(:meth:`PipelineResult.summary`) on the job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class SequenceRole(enum.Enum):
    """The MR series a tongue study needs, in the model's channel order."""

    CE_T1 = "ce_t1"
    T2 = "t2"
    T1 = "t1"

    @property
    def label(self) -> str:
        """Human-readable name used in reports and logs."""
        return {"ce_t1": "CE-T1", "t2": "T2", "t1": "T1"}[self.value]


@dataclass(frozen=True)
class GridGeometry:
    """Patient geometry of a volume, in LPS millimetres.

    ``direction`` is a 3x3 matrix whose columns are the patient-space
    directions of the array's x (column), y (row) and z (slice) axes, as in
    SimpleITK. Arrays on this grid are indexed ``[z, y, x]``.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.direction) != 9:
            raise ValueError(
                f"direction must have 9 values, got {len(self.direction)}; "
                "pass the 3x3 direction matrix flattened row by row"
            )
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")


@dataclass(frozen=True)
class SeriesUsed:
    """One input series and the SOP instances that make its slices, in z order."""

    role: SequenceRole
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str | None = None
    series_description: str = ""


@dataclass(frozen=True)
class ModelIdentity:
    """Identity of a model package, as its manifest states it."""

    name: str
    version: str
    kind: str
    sha256: str
    is_demo: bool
    training_data: str
    intended_use: str


@dataclass(frozen=True)
class AlignmentRecord:
    """Method and transform that brought one series onto the CE-T1 grid."""

    role: SequenceRole
    method: str
    transform: tuple[float, ...] = ()
    metric_value: float | None = None


@dataclass
class Segmentation:
    """The tumour mask on the CE-T1 grid.

    ``mask`` is a ``uint8`` array indexed ``[z, y, x]`` with 1 inside the
    tumour. Slice ``k`` of the mask lies on the CE-T1 instance
    ``source_sop_instance_uids[k]``.
    """

    mask: np.ndarray
    geometry: GridGeometry
    source_sop_instance_uids: tuple[str, ...]
    volume_mm3: float
    max_diameter_mm: float
    # 1-based frame number of slice k inside a multi-frame (Enhanced MR)
    # source instance, or None where that instance is single-frame. Empty
    # when unknown, which writers treat as all single-frame.
    source_frame_numbers: tuple[int | None, ...] = ()

    @property
    def is_empty(self) -> bool:
        """Whether no voxel was labelled tumour."""
        return not bool(self.mask.any())


@dataclass
class RadiomicsResult:
    """Radiomics features of the tumour, named ``<sequence>_<image type>_<class>_<feature>``."""

    status: str
    features: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class NomogramResult:
    """The nomogram's output for one study.

    ``probability`` is ``None`` when a required input was missing and the
    model file sets no imputation for it. ``missing_inputs`` always lists every
    input that was absent, imputed or not. ``invalid_inputs`` lists the
    clinical inputs whose value could not be read (a T stage of "T5"); they
    count as missing and appear in ``missing_inputs`` too.
    """

    probability: float | None
    risk_group: str | None
    cutoff: float
    radiomics_score: float | None
    points: dict[str, float] = field(default_factory=dict)
    total_points: float | None = None
    missing_inputs: list[str] = field(default_factory=list)
    imputed_inputs: list[str] = field(default_factory=list)
    invalid_inputs: list[str] = field(default_factory=list)


@dataclass
class PipelineResult:
    """Everything one pipeline run produced for a study."""

    study_instance_uid: str
    series: dict[SequenceRole, SeriesUsed]
    segmentation: Segmentation
    radiomics: RadiomicsResult
    nomogram: NomogramResult | None
    models: list[ModelIdentity]
    alignment: list[AlignmentRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def is_demo(self) -> bool:
        """Whether any model behind this result is a demo model."""
        return any(model.is_demo for model in self.models)

    def summary(self) -> dict:
        """Return a JSON-serialisable summary for the job database and dashboard."""
        nomogram = self.nomogram
        return {
            "study_instance_uid": self.study_instance_uid,
            "series": {role.value: used.series_instance_uid for role, used in self.series.items()},
            "tumour_found": not self.segmentation.is_empty,
            "volume_mm3": self.segmentation.volume_mm3,
            "max_diameter_mm": self.segmentation.max_diameter_mm,
            "radiomics_status": self.radiomics.status,
            "probability": None if nomogram is None else nomogram.probability,
            "risk_group": None if nomogram is None else nomogram.risk_group,
            "missing_inputs": [] if nomogram is None else list(nomogram.missing_inputs),
            "imputed_inputs": [] if nomogram is None else list(nomogram.imputed_inputs),
            "invalid_inputs": [] if nomogram is None else list(nomogram.invalid_inputs),
            "models": [f"{m.name} {m.version}" for m in self.models],
            "is_demo": self.is_demo,
            "notes": list(self.notes),
            "stage_seconds": dict(self.stage_seconds),
        }
