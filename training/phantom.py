"""Synthetic tongue-cancer MR studies written as real DICOM files.

:func:`make_study` writes one study with axial CE-T1, T2 and T1 series in one
frame of reference, and keeps the ground-truth tumour mask on the CE-T1 grid.
:func:`make_cohort` writes many studies with clinical variables and a lymph
node metastasis label drawn from a logistic model of the lesion's features,
plus a cohort CSV for the nomogram trainer. Every object is labelled as a
synthetic phantom, not a patient.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from inference.result import GridGeometry, SequenceRole
from inference.segment import max_diameter_mm
from training.phantom_anatomy import (
    SIGNAL,
    T1_FAT_SAT_SIGNAL,
    Grid,
    LesionSpec,
    make_grid,
    render_labels,
    render_sequence,
    sample_lesion,
    smooth_field,
    tongue_mask,
)
from training.phantom_dicom import (
    SeriesKind,
    SliceGeometry,
    StudyHeader,
    Vendor,
    check_transfer_syntax,
    derive_uid,
    to_stored_values,
    vendor_style,
    write_series,
)

logger = logging.getLogger(__name__)

DEFAULT_FOV_MM = 200.0
DEFAULT_SLICE_THICKNESS_MM = 4.0

# Columns of the cohort CSV, in order.
COHORT_COLUMNS = (
    "case_id",
    "folder",
    "mask_path",
    "age",
    "sex",
    "t_stage",
    "doi_mm",
    "ln_metastasis",
    "split",
    "vendor",
    "lesion_volume_mm3",
    "max_diameter_mm",
    "heterogeneity",
)

# Logistic model behind the synthetic metastasis label: log-odds from the
# standardised lesion volume, depth of invasion and heterogeneity.
LABEL_INTERCEPT = -0.4
LABEL_WEIGHTS = {"log_volume": 1.0, "doi": 1.2, "heterogeneity": 1.4}
LABEL_NOISE_SD = 0.5


@dataclass
class PhantomStudy:
    """One synthetic study on disk and its ground truth.

    ``mask`` is a uint8 ``[z, y, x]`` array on the CE-T1 grid with 1 inside the
    tumour. ``clinical`` and ``label`` are filled by :func:`make_cohort` only.
    """

    folder: Path
    study_instance_uid: str
    frame_of_reference_uid: str
    series_instance_uids: dict[SequenceRole, str]
    files: dict[SequenceRole, list[Path]]
    sop_instance_uids: dict[SequenceRole, list[str]]
    mask: np.ndarray
    geometry: GridGeometry
    lesion: LesionSpec
    lesion_volume_mm3: float
    max_diameter_mm: float
    doi_mm: float
    vendor: Vendor
    patient_sex: str = ""
    patient_age_years: int = 0
    extra_series: dict[str, list[Path]] = field(default_factory=dict)
    clinical: dict[str, object] = field(default_factory=dict)
    label: int | None = None
    mask_path: Path | None = None

    def mask_image(self) -> sitk.Image:
        """Return the mask as a SimpleITK image with the CE-T1 geometry."""
        image = sitk.GetImageFromArray(self.mask.astype(np.uint8))
        image.SetOrigin(self.geometry.origin)
        image.SetSpacing(self.geometry.spacing)
        image.SetDirection(self.geometry.direction)
        return image

    def write_mask(self, path: Path) -> Path:
        """Write the mask to NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``) or MetaImage."""
        path = Path(path)
        suffixes = "".join(path.suffixes).lower()
        if not suffixes.endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
            raise ValueError(
                f"mask path {path} has an unsupported extension; use .nii.gz, .nii, .nrrd or .mha"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(self.mask_image(), str(path), useCompression=True)
        self.mask_path = path
        return path


def make_study(
    out_dir: Path,
    *,
    seed: int,
    vendor: str = "siemens",
    chinese: bool = False,
    rows: int = 128,
    columns: int = 128,
    slices: int = 24,
    pixel_spacing_mm: float | None = None,
    slice_thickness_mm: float = DEFAULT_SLICE_THICKNESS_MM,
    transfer_syntax: str | None = None,
    patient_name: str | None = None,
    study_instance_uid: str | None = None,
    extra_series: bool = False,
    lesion: LesionSpec | None = None,
) -> PhantomStudy:
    """Write one synthetic tongue MR study as DICOM files under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Folder to write; each series goes to ``out_dir/<role>/NNNN.dcm``.
    seed : int
        Seed of every random choice; the same seed gives the same study and UIDs.
    vendor : str
        Header style: ``"siemens"``, ``"ge"`` or ``"philips"``.
    chinese : bool
        Write GB18030 headers with a Chinese patient name and series descriptions.
    rows, columns, slices : int
        Matrix size of every axial series.
    pixel_spacing_mm : float or None
        In-plane spacing; None gives a 200 mm field of view.
    slice_thickness_mm : float
        Slice thickness and spacing (contiguous slices).
    transfer_syntax : str or None
        Transfer syntax UID: Explicit or Implicit VR Little Endian, JPEG-LS
        lossless or RLE lossless. None writes Explicit VR Little Endian.
    patient_name : str or None
        Patient name; None gives ``PHANTOM^<seed>`` (a Chinese name if ``chinese``).
    study_instance_uid : str or None
        Study Instance UID; None derives one from the seed.
    extra_series : bool
        Also write a localizer, a coronal CE-T1 and a pre-contrast fat-saturated
        axial T1, which a role matcher must not mistake for the inputs.
    lesion : LesionSpec or None
        Tumour to draw; None draws one from the seed.

    Returns
    -------
    PhantomStudy
        Paths, UIDs and ground truth of the study.
    """
    vendor_enum = _check_vendor(vendor)
    syntax = check_transfer_syntax(transfer_syntax)
    if min(rows, columns, slices) < 2:
        raise ValueError(
            f"rows, columns and slices must be at least 2, got {rows}, {columns}, {slices}"
        )
    pixel_mm = (
        DEFAULT_FOV_MM / max(rows, columns) if pixel_spacing_mm is None else float(pixel_spacing_mm)
    )
    if pixel_mm <= 0 or slice_thickness_mm <= 0:
        raise ValueError(
            f"pixel_spacing_mm and slice_thickness_mm must be positive, got {pixel_mm} and {slice_thickness_mm}"
        )

    rng = np.random.default_rng(seed)
    grid = make_grid(rows, columns, slices, pixel_mm, slice_thickness_mm)
    lesion = sample_lesion(rng) if lesion is None else lesion
    labels, lesion_mask = render_labels(grid, lesion)
    texture = smooth_field(rng, grid.shape, coarse=max(8, int(DEFAULT_FOV_MM / 6.0)))

    header = _study_header(seed, vendor_enum, chinese, patient_name, study_instance_uid, rng)
    style = vendor_style(vendor_enum, chinese)
    axial = _axial_geometry(grid, pixel_mm, slice_thickness_mm)
    geometry = _grid_geometry(grid, pixel_mm, slice_thickness_mm)

    study = PhantomStudy(
        folder=Path(out_dir),
        study_instance_uid=header.study_instance_uid,
        frame_of_reference_uid=header.frame_of_reference_uid,
        series_instance_uids={},
        files={},
        sop_instance_uids={},
        mask=lesion_mask.astype(np.uint8),
        geometry=geometry,
        lesion=lesion,
        lesion_volume_mm3=float(lesion_mask.sum()) * pixel_mm * pixel_mm * slice_thickness_mm,
        max_diameter_mm=max_diameter_mm(lesion_mask, geometry),
        doi_mm=depth_of_invasion(lesion_mask, grid),
        vendor=vendor_enum,
        patient_sex=header.patient_sex,
        patient_age_years=header.patient_age_years,
    )

    volumes: dict[SequenceRole, np.ndarray] = {}
    for role in SequenceRole:
        image = render_sequence(labels, SIGNAL[role], grid, lesion, rng, texture)
        volumes[role] = to_stored_values(image)
        series_uid = derive_uid(header.study_instance_uid, "series", role.value)
        paths, uids = write_series(
            Path(out_dir) / role.value,
            volumes[role],
            study=header,
            vendor=style,
            kind=SeriesKind(role.value),
            series_uid=series_uid,
            geometry=axial,
            transfer_syntax=syntax,
        )
        study.series_instance_uids[role] = series_uid
        study.files[role] = paths
        study.sop_instance_uids[role] = uids

    if extra_series:
        fat_sat = to_stored_values(
            render_sequence(labels, T1_FAT_SAT_SIGNAL, grid, lesion, rng, texture)
        )
        study.extra_series = _write_extra_series(
            Path(out_dir),
            volumes[SequenceRole.CE_T1],
            fat_sat,
            grid,
            axial,
            header=header,
            style=style,
            syntax=syntax,
        )
    logger.debug("Wrote phantom study %s (seed %s)", header.study_instance_uid, seed)
    return study


def _check_vendor(vendor: str) -> Vendor:
    try:
        return Vendor(vendor.lower())
    except ValueError as exc:
        names = ", ".join(v.value for v in Vendor)
        raise ValueError(f"vendor {vendor!r} is not supported; use one of {names}") from exc


def _study_header(
    seed: int,
    vendor: Vendor,
    chinese: bool,
    patient_name: str | None,
    study_instance_uid: str | None,
    rng: np.random.Generator,
) -> StudyHeader:
    study_uid = study_instance_uid or str(derive_uid("study", seed, vendor.value, chinese))
    if patient_name is None:
        # 体模 means "phantom", so the Chinese name is labelled synthetic as well.
        patient_name = f"体模^张三{seed}" if chinese else f"PHANTOM^{seed}"
    start = dt.datetime(2026, 1, 5, 9, 0, 0) + dt.timedelta(days=int(seed % 300))
    return StudyHeader(
        study_instance_uid=study_uid,
        frame_of_reference_uid=str(derive_uid(study_uid, "frame-of-reference")),
        patient_name=patient_name,
        patient_id=f"PHANTOM-{seed}",
        patient_sex=str(rng.choice(("M", "F"))),
        patient_age_years=int(rng.integers(30, 80)),
        study_datetime=start,
        accession_number=f"PH{seed % 10**8:08d}",
        chinese=chinese,
    )


def _axial_geometry(grid: Grid, pixel_mm: float, slice_mm: float) -> SliceGeometry:
    x0, y0 = float(grid.x_mm[0]), float(grid.y_mm[0])
    positions = tuple((x0, y0, float(z)) for z in grid.z_mm)
    return SliceGeometry(
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        positions=positions,
        pixel_spacing=(pixel_mm, pixel_mm),
        slice_thickness=slice_mm,
        slice_locations=tuple(float(z) for z in grid.z_mm),
    )


def _grid_geometry(grid: Grid, pixel_mm: float, slice_mm: float) -> GridGeometry:
    return GridGeometry(
        origin=(float(grid.x_mm[0]), float(grid.y_mm[0]), float(grid.z_mm[0])),
        spacing=(pixel_mm, pixel_mm, slice_mm),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        size=(grid.x_mm.size, grid.y_mm.size, grid.z_mm.size),
    )


def _write_extra_series(
    out_dir: Path,
    ce_t1: np.ndarray,
    fat_sat: np.ndarray,
    grid: Grid,
    axial: SliceGeometry,
    *,
    header: StudyHeader,
    style,
    syntax,
) -> dict[str, list[Path]]:
    """Write the decoy series: sagittal localizer, coronal CE-T1, fat-saturated T1."""
    pixel_mm = axial.pixel_spacing[0]
    slice_mm = axial.slice_thickness
    z_top = float(grid.z_mm[-1])
    written: dict[str, list[Path]] = {}

    # Reslicing the axial volume keeps the decoys in the same frame of reference.
    x_indices = np.linspace(grid.x_mm.size * 0.4, grid.x_mm.size * 0.6, 3).astype(int)
    sagittal = np.stack([ce_t1[::-1, :, i] for i in x_indices])
    sagittal_geometry = SliceGeometry(
        orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        positions=tuple((float(grid.x_mm[i]), float(grid.y_mm[0]), z_top) for i in x_indices),
        pixel_spacing=(slice_mm, pixel_mm),
        slice_thickness=pixel_mm,
        slice_locations=tuple(float(grid.x_mm[i]) for i in x_indices),
    )
    y_indices = np.arange(0, grid.y_mm.size, max(1, grid.y_mm.size // 16))
    coronal = np.stack([ce_t1[::-1, j, :] for j in y_indices])
    coronal_geometry = SliceGeometry(
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        positions=tuple((float(grid.x_mm[0]), float(grid.y_mm[j]), z_top) for j in y_indices),
        pixel_spacing=(slice_mm, pixel_mm),
        slice_thickness=pixel_mm,
        slice_locations=tuple(float(grid.y_mm[j]) for j in y_indices),
    )

    for kind, pixels, geometry in (
        (SeriesKind.LOCALIZER, sagittal, sagittal_geometry),
        (SeriesKind.CORONAL_CE_T1, coronal, coronal_geometry),
        (SeriesKind.T1_FAT_SAT, fat_sat, axial),
    ):
        series_uid = derive_uid(header.study_instance_uid, "series", kind.value)
        paths, _ = write_series(
            out_dir / kind.value,
            pixels,
            study=header,
            vendor=style,
            kind=kind,
            series_uid=series_uid,
            geometry=geometry,
            transfer_syntax=syntax,
        )
        written[kind.value] = paths
    return written


def depth_of_invasion(mask: np.ndarray, grid: Grid) -> float:
    """Return the depth of invasion: the deepest tumour point below the tongue surface, in mm."""
    tongue = tongue_mask(grid)
    spacing = (
        float(abs(grid.z_mm[1] - grid.z_mm[0])) if grid.z_mm.size > 1 else 1.0,
        float(abs(grid.y_mm[1] - grid.y_mm[0])),
        float(abs(grid.x_mm[1] - grid.x_mm[0])),
    )
    depth = ndimage.distance_transform_edt(tongue, sampling=spacing)
    return float(depth[mask.astype(bool)].max())


def t_stage(max_diameter_mm: float, doi_mm: float) -> str:
    """Return a T category from tumour size and depth of invasion.

    The T1-T3 rules follow AJCC 8th edition for the oral cavity (size 20/40 mm,
    DOI 5/10 mm). NOTE: real T4 needs invasion of adjacent structures, which
    the phantom does not model, so a DOI above 20 mm is used in its place.
    """
    if doi_mm > 20.0:
        return "T4"
    if max_diameter_mm > 40.0 or doi_mm > 10.0:
        return "T3"
    if max_diameter_mm > 20.0 or doi_mm > 5.0:
        return "T2"
    return "T1"


def make_cohort(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    test_fraction: float = 0.3,
    vendors: tuple[str, ...] = ("siemens", "ge", "philips"),
    **study_options: object,
) -> list[PhantomStudy]:
    """Write ``n`` phantom studies with clinical variables and a metastasis label.

    Each case goes to ``out_dir/case_NNN`` with its mask at
    ``out_dir/case_NNN/mask.nii.gz``. ``out_dir/cohort.csv`` lists the cases
    with the columns in :data:`COHORT_COLUMNS`; ``folder`` and ``mask_path``
    are relative to ``out_dir``. The label ``ln_metastasis`` is drawn from a
    logistic model of log lesion volume, depth of invasion and heterogeneity
    plus Gaussian noise on the log-odds, so it is learnable but not exact.

    Parameters
    ----------
    out_dir : Path
        Folder for the cases and the CSV.
    n : int
        Number of cases, at least 2.
    seed : int
        Seed of the cohort; case ``i`` uses study seed ``seed * 1000 + i``.
    test_fraction : float
        Fraction of cases marked ``test`` in the ``split`` column; the rest are ``train``.
    vendors : tuple of str
        Vendors used in turn, one per case.
    **study_options
        Passed to :func:`make_study` (rows, columns, slices and so on).

    Returns
    -------
    list of PhantomStudy
        The cases, with ``clinical`` and ``label`` filled in.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2 cases, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 7919])

    studies: list[PhantomStudy] = []
    for index in range(n):
        case_seed = seed * 1000 + index
        lesion = sample_lesion(np.random.default_rng([case_seed, 31]))
        study = make_study(
            out_dir / f"case_{index:03d}",
            seed=case_seed,
            vendor=vendors[index % len(vendors)],
            lesion=lesion,
            **study_options,
        )
        study.write_mask(study.folder / "mask.nii.gz")
        studies.append(study)

    test_count = max(1, int(round(n * test_fraction)))
    test_indices = set(rng.permutation(n)[:test_count].tolist())
    for index, study in enumerate(studies):
        study.label = int(rng.random() < metastasis_probability(study, rng))
        study.clinical = {
            "age": study.patient_age_years,
            "sex": study.patient_sex,
            "t_stage": t_stage(study.max_diameter_mm, study.doi_mm),
            "doi_mm": round(study.doi_mm, 2),
            "split": "test" if index in test_indices else "train",
        }
    write_cohort_csv(out_dir / "cohort.csv", studies)
    logger.info("Wrote phantom cohort of %d cases to %s", n, out_dir)
    return studies


def metastasis_probability(study: PhantomStudy, rng: np.random.Generator | None = None) -> float:
    """Return the synthetic probability of nodal metastasis from the lesion's features.

    With ``rng``, Gaussian noise is added to the log-odds, so two cases with
    equal features can differ.
    """
    # Centre and scale are the mean and SD of 300 lesions from sample_lesion,
    # so an average lesion sits near log-odds LABEL_INTERCEPT.
    log_volume = (np.log(max(study.lesion_volume_mm3, 1.0)) - 7.35) / 0.82
    doi = (study.doi_mm - 9.0) / 3.0
    heterogeneity = (study.lesion.heterogeneity - 0.5) / 0.29
    logit = (
        LABEL_INTERCEPT
        + LABEL_WEIGHTS["log_volume"] * log_volume
        + LABEL_WEIGHTS["doi"] * doi
        + LABEL_WEIGHTS["heterogeneity"] * heterogeneity
    )
    if rng is not None:
        logit += rng.normal(scale=LABEL_NOISE_SD)
    return float(1.0 / (1.0 + np.exp(-logit)))


def write_cohort_csv(path: Path, studies: list[PhantomStudy]) -> Path:
    """Write the cohort table, with folder and mask paths relative to the CSV's folder."""
    path = Path(path)
    base = path.parent
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COHORT_COLUMNS)
        writer.writeheader()
        for study in studies:
            mask_path = study.mask_path or study.write_mask(study.folder / "mask.nii.gz")
            writer.writerow(
                {
                    "case_id": study.folder.name,
                    "folder": study.folder.relative_to(base).as_posix(),
                    "mask_path": Path(mask_path).relative_to(base).as_posix(),
                    "age": study.clinical.get("age", study.patient_age_years),
                    "sex": study.clinical.get("sex", study.patient_sex),
                    "t_stage": study.clinical.get(
                        "t_stage", t_stage(study.max_diameter_mm, study.doi_mm)
                    ),
                    "doi_mm": f"{study.doi_mm:.2f}",
                    "ln_metastasis": "" if study.label is None else study.label,
                    "split": study.clinical.get("split", "train"),
                    "vendor": study.vendor.value,
                    "lesion_volume_mm3": f"{study.lesion_volume_mm3:.1f}",
                    "max_diameter_mm": f"{study.max_diameter_mm:.2f}",
                    "heterogeneity": f"{study.lesion.heterogeneity:.3f}",
                }
            )
    return path
