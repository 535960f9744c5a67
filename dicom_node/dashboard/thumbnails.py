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


# A slice is one frame of one SOP instance: (SOPInstanceUID, frame number from 1).
SliceKey = tuple[str, int]


@dataclass(frozen=True)
class SourceSlice:
    """One CE-T1 frame: its pixels and its position along the slice normal."""

    pixels: np.ndarray
    position: float


def _frame_position(dataset: pydicom.Dataset, frame_index: int) -> float:
    # Position along the slice normal, from the classic attributes or the
    # Enhanced MR functional groups (PS3.3 C.7.6.16.2.2 and C.7.6.16.2.3);
    # the frame or instance number where the geometry is missing.
    try:
        if "PerFrameFunctionalGroupsSequence" in dataset:
            frame = dataset.PerFrameFunctionalGroupsSequence[frame_index]
            shared = dataset.SharedFunctionalGroupsSequence[0]
            orientation_group = frame if "PlaneOrientationSequence" in frame else shared
            orientation = orientation_group.PlaneOrientationSequence[0].ImageOrientationPatient
            position = frame.PlanePositionSequence[0].ImagePositionPatient
        else:
            orientation = dataset.ImageOrientationPatient
            position = dataset.ImagePositionPatient
        normal = np.cross(np.array(orientation[:3], float), np.array(orientation[3:], float))
        return float(np.dot(normal, np.array(position, float)))
    except (AttributeError, IndexError, KeyError, ValueError, TypeError):
        return float(frame_index + (getattr(dataset, "InstanceNumber", 0) or 0))


def _read_slices(paths: tuple[Path, ...]) -> dict[SliceKey, SourceSlice]:
    slices = {}
    for path in paths:
        try:
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array
        except (OSError, pydicom.errors.InvalidDicomError, AttributeError, ValueError) as exc:
            raise ThumbnailUnavailable(f"cannot read CE-T1 file {path}: {exc}") from exc
        frames = pixels if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]
        for index, frame in enumerate(frames):
            key = (str(dataset.SOPInstanceUID), index + 1)
            slices[key] = SourceSlice(frame, _frame_position(dataset, index))
    if not slices:
        raise ThumbnailUnavailable("the CE-T1 series has no stored instances")
    return slices


def _frame_source(frame_group: pydicom.Dataset) -> SliceKey | None:
    for derivation in getattr(frame_group, "DerivationImageSequence", []):
        for source in getattr(derivation, "SourceImageSequence", []):
            frame_numbers = getattr(source, "ReferencedFrameNumber", None) or 1
            if not isinstance(frame_numbers, int):
                frame_numbers = frame_numbers[0]
            return str(source.ReferencedSOPInstanceUID), int(frame_numbers)
    return None


def tumour_areas(seg_path: Path) -> dict[SliceKey, np.ndarray]:
    """Read a SEG and return, per source slice, the union of its segment masks.

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

    masks: dict[SliceKey, np.ndarray] = {}
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source = _frame_source(group)
        if source is None:
            raise ThumbnailUnavailable(f"SEG {seg_path} has a frame without a Source Image Sequence")
        mask = frame > 0
        masks[source] = masks[source] | mask if source in masks else mask
    return masks


def _windowed(pixels: np.ndarray) -> np.ndarray:
    # Percentiles rather than the stored VOI window, because a phantom or a
    # scanner's default window often clips the enhancing tumour.
    pixels = pixels.astype(np.float32)
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
    ordered = sorted(slices.values(), key=lambda item: item.position)
    middle = ordered[len(ordered) // 2].pixels
    if source.seg_path is None:
        return render_png(_windowed(middle), None, "no SEG: middle CE-T1 slice")

    masks = {key: mask for key, mask in tumour_areas(source.seg_path).items() if key in slices}
    if not any(mask.any() for mask in masks.values()):
        return render_png(_windowed(middle), None, "SEG has no tumour: middle CE-T1 slice")

    best = max(masks, key=lambda key: int(masks[key].sum()))
    image = _windowed(slices[best].pixels)
    mask = masks[best]
    if mask.shape != image.shape:
        raise ThumbnailUnavailable(f"SEG frame size {mask.shape} differs from the CE-T1 slice size {image.shape}")
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
