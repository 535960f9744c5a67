"""PNG thumbnails of a study's CE-T1 slice with the tumour contour of the job's SEG.

The slice shown is the one with the largest tumour area in the newest SEG
of the study. Each SEG frame names its source slice in its per-frame
Derivation Image Sequence (PS3.3 C.7.6.16.2.6), so the mask is drawn on the
very slice it was computed on, whatever the slice order in the spool.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from scipy import ndimage
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Instance, Job, Output, Series
from db.states import OutputKind

logger = logging.getLogger(__name__)

CE_T1_ROLE = "ce_t1"
MIN_THUMBNAIL_PX = 256
CACHE_ENTRIES = 128
CONTOUR_RGB = (255, 0, 0)


class ThumbnailUnavailable(Exception):
    """The study has no CE-T1 series, or its files cannot be read."""


@dataclass(frozen=True)
class ThumbnailSource:
    """Inputs of a thumbnail: the CE-T1 files in the spool and the SEG file, if any."""

    series_instance_uid: str
    instance_paths: tuple[Path, ...]
    seg_path: Path | None
    seg_sop_instance_uid: str | None

    @property
    def cache_key(self) -> tuple[str, int, str | None]:
        """Key that changes when new CE-T1 slices or a new SEG arrive."""
        return (self.series_instance_uid, len(self.instance_paths), self.seg_sop_instance_uid)


def find_source(session: Session, study_id: int, spool_dir: Path) -> ThumbnailSource:
    """Look up the study's CE-T1 series and the newest SEG output of its jobs.

    Raises
    ------
    ThumbnailUnavailable
        If no series of the study has the CE-T1 role.
    """
    series = session.scalars(
        select(Series).where(Series.study_id == study_id, Series.role == CE_T1_ROLE).order_by(Series.id.desc())
    ).first()
    if series is None:
        raise ThumbnailUnavailable(f"study {study_id} has no series with the CE-T1 role")
    paths = session.scalars(
        select(Instance.path).where(Instance.series_id == series.id, Instance.is_conflict.is_(False)).order_by(Instance.id)
    ).all()
    seg = session.scalars(
        select(Output)
        .join(Job, Job.id == Output.job_id)
        .where(Job.study_id == study_id, Output.kind == OutputKind.SEG)
        .order_by(Output.id.desc())
    ).first()
    return ThumbnailSource(
        series_instance_uid=series.series_instance_uid,
        instance_paths=tuple(spool_dir / path for path in paths),
        seg_path=None if seg is None else Path(seg.path),
        seg_sop_instance_uid=None if seg is None else seg.sop_instance_uid,
    )


def _read_slices(paths: tuple[Path, ...]) -> dict[str, pydicom.Dataset]:
    slices = {}
    for path in paths:
        try:
            dataset = pydicom.dcmread(path)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ThumbnailUnavailable(f"cannot read CE-T1 file {path}: {exc}") from exc
        slices[str(dataset.SOPInstanceUID)] = dataset
    if not slices:
        raise ThumbnailUnavailable("the CE-T1 series has no stored instances")
    return slices


def _slice_position(dataset: pydicom.Dataset) -> float:
    # Order along the slice normal; InstanceNumber where the geometry is missing.
    try:
        row, column = np.array(dataset.ImageOrientationPatient[:3], float), np.array(dataset.ImageOrientationPatient[3:], float)
        return float(np.dot(np.cross(row, column), np.array(dataset.ImagePositionPatient, float)))
    except (AttributeError, ValueError, TypeError):
        return float(getattr(dataset, "InstanceNumber", 0) or 0)


def _frame_source_uid(frame_group: pydicom.Dataset) -> str | None:
    for derivation in getattr(frame_group, "DerivationImageSequence", []):
        for source in getattr(derivation, "SourceImageSequence", []):
            return str(source.ReferencedSOPInstanceUID)
    return None


def tumour_areas(seg_path: Path) -> dict[str, np.ndarray]:
    """Read a SEG and return, per source SOP Instance UID, the union of its segment masks.

    Raises
    ------
    ThumbnailUnavailable
        If the file cannot be read or its frames do not name their source slices.
    """
    try:
        seg = pydicom.dcmread(seg_path)
        frames = seg.pixel_array
    except (OSError, pydicom.errors.InvalidDicomError, AttributeError, ValueError) as exc:
        raise ThumbnailUnavailable(f"cannot read SEG {seg_path}: {exc}") from exc
    if frames.ndim == 2:
        frames = frames[np.newaxis]

    masks: dict[str, np.ndarray] = {}
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source_uid = _frame_source_uid(group)
        if source_uid is None:
            raise ThumbnailUnavailable(f"SEG {seg_path} has a frame without a Source Image Sequence")
        mask = frame > 0
        masks[source_uid] = masks[source_uid] | mask if source_uid in masks else mask
    return masks


def _windowed(dataset: pydicom.Dataset) -> np.ndarray:
    # Percentiles rather than the stored VOI window, because a phantom or a
    # scanner's default window often clips the enhancing tumour.
    pixels = dataset.pixel_array.astype(np.float32)
    if pixels.ndim == 3:
        pixels = pixels[0]
    low, high = np.percentile(pixels, [1.0, 99.5])
    scaled = (pixels - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def _scale(rows: int, columns: int) -> int:
    return max(1, -(-MIN_THUMBNAIL_PX // max(rows, columns)))


def render_png(image: np.ndarray, mask: np.ndarray | None, label: str | None) -> bytes:
    """Draw ``image`` (uint8) enlarged, with the outline of ``mask`` in red and an optional label."""
    factor = _scale(*image.shape)
    picture = Image.fromarray(image).resize((image.shape[1] * factor, image.shape[0] * factor), Image.Resampling.BILINEAR)
    rgb = np.array(picture.convert("RGB"))
    if mask is not None and mask.any():
        big_mask = np.kron(mask.astype(np.uint8), np.ones((factor, factor), np.uint8)).astype(bool)
        outline = big_mask & ~ndimage.binary_erosion(big_mask, iterations=max(1, factor // 2))
        rgb[outline] = CONTOUR_RGB
    picture = Image.fromarray(rgb)
    if label:
        ImageDraw.Draw(picture).text((4, 4), label, fill=(255, 255, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def build_thumbnail(source: ThumbnailSource) -> bytes:
    """Render the PNG for ``source``.

    Raises
    ------
    ThumbnailUnavailable
        If the CE-T1 files or the SEG cannot be read.
    """
    slices = _read_slices(source.instance_paths)
    if source.seg_path is None:
        ordered = sorted(slices.values(), key=_slice_position)
        middle = ordered[len(ordered) // 2]
        return render_png(_windowed(middle), None, "no SEG: middle CE-T1 slice")

    masks = {uid: mask for uid, mask in tumour_areas(source.seg_path).items() if uid in slices}
    if not masks or not any(mask.any() for mask in masks.values()):
        ordered = sorted(slices.values(), key=_slice_position)
        return render_png(_windowed(ordered[len(ordered) // 2]), None, "SEG has no tumour: middle CE-T1 slice")

    best_uid = max(masks, key=lambda uid: int(masks[uid].sum()))
    image = _windowed(slices[best_uid])
    mask = masks[best_uid]
    if mask.shape != image.shape:
        raise ThumbnailUnavailable(
            f"SEG frame size {mask.shape} differs from the CE-T1 slice size {image.shape}"
        )
    return render_png(image, mask, None)


class ThumbnailCache:
    """A bounded in-memory cache of rendered thumbnails, safe across request threads."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, source: ThumbnailSource) -> bytes:
        """Return the cached PNG for ``source``, rendering it on a miss."""
        key = source.cache_key
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        png = build_thumbnail(source)
        with self._lock:
            self._items[key] = png
            while len(self._items) > self._entries:
                self._items.popitem(last=False)
        return png
