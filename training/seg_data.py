"""Segmentation training data: cases from DICOM series folders and tumour masks.

A case folder contains one sub-folder of DICOM files per sequence role
(``ce_t1/``, ``t2/``, ``t1/``) and a tumour mask as NIfTI, NRRD or DICOM SEG.
T2 and T1 are resampled onto the CE-T1 grid, and the model input is built by
:func:`inference.segment.model_input_slices`, so training sees exactly what
the node feeds the model.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from inference.model_package import SegmentationManifest
from inference.result import SequenceRole
from inference.segment import make_trimap, model_input_slices, orient_for_model, same_grid
from inference.volume import load_series

logger = logging.getLogger(__name__)

MASK_FILE_NAMES = ("mask.nii.gz", "mask.nii", "mask.nrrd", "seg.dcm")


@dataclass
class SegCase:
    """One training or test case: volumes on the CE-T1 grid and the tumour mask.

    ``mask`` is uint8 ``[z, y, x]`` on the grid of ``volumes[SequenceRole.CE_T1]``.
    """

    case_id: str
    volumes: dict[SequenceRole, sitk.Image]
    mask: np.ndarray

    @property
    def reference(self) -> sitk.Image:
        """The CE-T1 volume, whose grid every other array of the case shares."""
        return self.volumes[SequenceRole.CE_T1]


def load_case(folder: Path, mask_path: Path | None = None, case_id: str | None = None) -> SegCase:
    """Read a case folder with ``ce_t1/``, ``t2/`` and ``t1/`` series and a mask.

    Parameters
    ----------
    folder : Path
        Case folder.
    mask_path : Path or None
        NIfTI, NRRD or DICOM SEG mask; None looks for one of
        :data:`MASK_FILE_NAMES` in ``folder``.
    case_id : str or None
        Name of the case; None uses the folder name.

    Raises
    ------
    FileNotFoundError
        If a series folder or the mask is missing.
    """
    folder = Path(folder)
    series = {role: load_series(_dicom_files(folder / role.value)) for role in SequenceRole}
    reference = series[SequenceRole.CE_T1].image
    volumes = {
        role: _on_grid(volume.image, reference, sitk.sitkLinear) for role, volume in series.items()
    }

    mask_path = _find_mask(folder) if mask_path is None else Path(mask_path)
    if mask_path.suffix.lower() == ".dcm":
        mask = _read_seg_mask(mask_path, series[SequenceRole.CE_T1].sop_instance_uids)
    else:
        mask_image = _on_grid(sitk.ReadImage(str(mask_path)), reference, sitk.sitkNearestNeighbor)
        mask = (sitk.GetArrayFromImage(mask_image) > 0).astype(np.uint8)
    return SegCase(case_id=case_id or folder.name, volumes=volumes, mask=mask)


def _dicom_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"series folder {folder} is missing or empty; each case needs ce_t1/, t2/ and t1/ "
            "folders of DICOM files"
        )
    return files


def _find_mask(folder: Path) -> Path:
    for name in MASK_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no tumour mask in {folder}; add one of {', '.join(MASK_FILE_NAMES)} or pass mask_path"
    )


def _on_grid(image: sitk.Image, reference: sitk.Image, interpolator: int) -> sitk.Image:
    """Resample ``image`` onto the reference grid unless it is already on it."""
    if same_grid(image, reference):
        out = sitk.Image(image)
        out.CopyInformation(reference)
        return out
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def _read_seg_mask(path: Path, source_uids: Sequence[str]) -> np.ndarray:
    """Read segment 1 of a DICOM SEG as a mask in the slice order of the CE-T1 series."""
    import highdicom  # noqa: PLC0415 (only SEG masks need it, and it is slow to import)

    seg = highdicom.seg.segread(path)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    present = [uid for uid in source_uids if uid in referenced]
    if not present:
        raise ValueError(
            f"DICOM SEG {path} references none of the CE-T1 instances; give the SEG made on this series"
        )
    pixels = seg.get_pixels_by_source_instance(
        present, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    by_uid = dict(zip(present, pixels[..., 0]))
    rows, columns = pixels.shape[1:3]
    empty = np.zeros((rows, columns), dtype=np.uint8)
    return np.stack([(by_uid.get(uid, empty) > 0).astype(np.uint8) for uid in source_uids])


def load_cohort_cases(csv_path: Path, split: str | None = None) -> list[SegCase]:
    """Read the cases listed in a phantom cohort CSV, optionally only one split."""
    csv_path = Path(csv_path)
    cases = []
    with csv_path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if split is not None and row["split"] != split:
                continue
            folder = csv_path.parent / row["folder"]
            cases.append(load_case(folder, csv_path.parent / row["mask_path"], row["case_id"]))
    return cases


def find_case_folders(root: Path) -> list[Path]:
    """Return the sub-folders of ``root`` (or ``root`` itself) that hold a CE-T1 series."""
    root = Path(root)
    if (root / SequenceRole.CE_T1.value).is_dir():
        return [root]
    return sorted(p for p in root.iterdir() if (p / SequenceRole.CE_T1.value).is_dir())


def mask_for_model(mask: np.ndarray, reference: sitk.Image, size: tuple[int, int]) -> np.ndarray:
    """Return the mask in the model's orientation and input size, ``[z, height, width]``."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    oriented = sitk.GetArrayFromImage(orient_for_model(image))
    factors = (1.0, size[0] / oriented.shape[1], size[1] / oriented.shape[2])
    if factors[1:] == (1.0, 1.0):
        return oriented.astype(np.uint8)
    zoomed = ndimage.zoom(
        oriented.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True
    )
    return (zoomed >= 0.5).astype(np.uint8)


def training_target(mask: np.ndarray, border_px: int, class_ids: dict[str, int]) -> np.ndarray:
    """Return the trimap target with the border band kept outside the tumour.

    :func:`inference.segment.make_trimap` puts the band across the tumour
    edge, but the node counts only the tumour class as tumour, so a band
    inside the edge would teach the model to undersegment by ``border_px``.
    The tumour class is therefore restored over the whole mask.
    """
    trimap = make_trimap(mask, border_px, class_ids)
    trimap[mask.astype(bool)] = class_ids["tumour"]
    return trimap


@dataclass
class SliceArrays:
    """Model inputs ``(n, h, w, c)`` float32 and trimap targets ``(n, h, w)`` uint8."""

    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def case_slices(
    case: SegCase,
    manifest: SegmentationManifest,
    *,
    border_px: int,
    negative_slices: int | None,
    rng: np.random.Generator,
) -> SliceArrays:
    """Build the training slices of one case.

    Every slice with tumour is kept. ``negative_slices`` tumour-free slices
    are drawn at random, or all of them when it is None.
    """
    inputs = model_input_slices(case.volumes, manifest).astype(np.float32, copy=False)
    mask = mask_for_model(case.mask, case.reference, manifest.input_size)
    targets = training_target(mask, border_px, dict(manifest.class_ids))

    positive = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    negative = np.setdiff1d(np.arange(mask.shape[0]), positive)
    if negative_slices is not None and negative.size > negative_slices:
        negative = rng.choice(negative, negative_slices, replace=False)
    keep = np.sort(np.concatenate([positive, negative]))
    return SliceArrays(inputs=inputs[keep], targets=targets[keep])


def stack_slices(
    cases: Sequence[SegCase],
    manifest: SegmentationManifest,
    *,
    border_px: int = 1,
    negative_slices: int | None = None,
    seed: int = 0,
) -> SliceArrays:
    """Stack the training slices of several cases into one pair of arrays."""
    if not cases:
        raise ValueError("no cases were given; pass at least one case with a mask")
    rng = np.random.default_rng(seed)
    parts = [
        case_slices(case, manifest, border_px=border_px, negative_slices=negative_slices, rng=rng)
        for case in cases
    ]
    return SliceArrays(
        inputs=np.concatenate([p.inputs for p in parts]),
        targets=np.concatenate([p.targets for p in parts]),
    )


def iterate_batches(
    arrays: SliceArrays,
    batch_size: int,
    rng: np.random.Generator,
    *,
    flip_left_right: bool = True,
    flip_up_down: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield shuffled batches for one epoch, each slice flipped at random.

    Left-right flips mirror the tongue's two sides, which are alike; up-down
    flips swap anterior and posterior and are off by default.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = rng.permutation(len(arrays))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        inputs = arrays.inputs[index].copy()
        targets = arrays.targets[index].copy()
        for row in range(len(index)):
            if flip_left_right and rng.random() < 0.5:
                inputs[row] = inputs[row, :, ::-1]
                targets[row] = targets[row, :, ::-1]
            if flip_up_down and rng.random() < 0.5:
                inputs[row] = inputs[row, ::-1]
                targets[row] = targets[row, ::-1]
        yield inputs, targets
