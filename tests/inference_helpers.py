"""Builders shared by the inference tests: tiny model packages and DICOM series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from inference.model_package import LoadedSegmentationModel, SegmentationManifest, write_package
from inference.unet import build_unet

# Smallest decoder that keeps the U-Net structure, because tests never need capacity.
TINY_DECODER = (16, 8, 8, 8)
TINY_INPUT_SIZE = 32


def make_manifest(
    channels: Sequence[str], input_size: int = TINY_INPUT_SIZE
) -> SegmentationManifest:
    """Return a demo manifest for a tiny test model."""
    return SegmentationManifest(
        name="test-unet",
        version="0.0.1",
        input_size=(input_size, input_size),
        channels=tuple(channels),
        training_data="random weights, no training",
        intended_use="unit tests only",
        is_demo=True,
    )


def write_tiny_package(
    folder: Path, channels: Sequence[str], input_size: int = TINY_INPUT_SIZE
) -> Path:
    """Write an untrained tiny U-Net package and return its folder."""
    model = build_unet(input_size, len(channels), 3, decoder_filters=TINY_DECODER)
    return write_package(model, folder, make_manifest(channels, input_size))


def threshold_model(
    channels: Sequence[str], input_size: int = TINY_INPUT_SIZE, background_bias: float = 0.5
) -> LoadedSegmentationModel:
    """Return an in-memory model that labels tumour where the first channel exceeds a bias.

    A 1 x 1 convolution gives logits (background_bias, first channel, -10),
    so on z-scored input the tumour is every pixel brighter than
    ``background_bias`` standard deviations above the mean.
    """
    inputs = keras.Input((input_size, input_size, len(channels)))
    layer = keras.layers.Conv2D(3, 1)
    model = keras.Model(inputs, layer(inputs))
    kernel = np.zeros((1, 1, len(channels), 3), np.float32)
    kernel[0, 0, 0, 1] = 1.0
    layer.set_weights([kernel, np.array([background_bias, 0.0, -10.0], np.float32)])
    return LoadedSegmentationModel(
        folder=Path("."),
        manifest=make_manifest(channels, input_size),
        sha256="0" * 64,
        model=model,
    )


def write_mr_series(
    folder: Path,
    pixels: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.5, 0.5, 3.0),
    origin: Sequence[float] = (-32.0, -40.0, -20.0),
    row: Sequence[float] = (1.0, 0.0, 0.0),
    column: Sequence[float] = (0.0, 1.0, 0.0),
    positions: np.ndarray | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    description: str = "test series",
) -> list[Path]:
    """Write ``pixels[z, y, x]`` (uint16) as single-frame MR instances and return their paths.

    ``spacing`` is (column spacing, row spacing, slice spacing) in mm, as in
    SimpleITK. Slice ``k`` lies at ``origin + k * spacing_z * normal`` unless
    ``positions`` gives each slice's Image Position (Patient).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if positions is None:
        positions = slice_positions(len(pixels), spacing[2], origin, row, column)
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    study_uid = study_uid or generate_uid()

    paths = []
    for index, (plane, position) in enumerate(zip(pixels, positions)):
        dataset = _base_dataset(MRImageStorage, plane.shape, study_uid, series_uid, frame_of_reference_uid)
        dataset.SeriesDescription = description
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [f"{v:.6g}" for v in position]
        dataset.ImageOrientationPatient = [f"{v:.8g}" for v in (*row, *column)]
        dataset.PixelSpacing = [spacing[1], spacing[0]]
        dataset.SliceThickness = spacing[2]
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept
        dataset.PixelData = np.ascontiguousarray(plane, dtype=np.uint16).tobytes()
        # Write in shuffled order so readers cannot rely on file order.
        path = folder / f"slice_{(index * 7919) % 10007:05d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced_mr(
    path: Path,
    pixels: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.5, 0.5, 3.0),
    origin: Sequence[float] = (-32.0, -40.0, -20.0),
    row: Sequence[float] = (1.0, 0.0, 0.0),
    column: Sequence[float] = (0.0, 1.0, 0.0),
    frame_order: Sequence[int] | None = None,
) -> Path:
    """Write ``pixels[z, y, x]`` as one Enhanced MR instance with functional groups.

    Orientation and pixel spacing go in the shared groups and each frame's
    position in its per-frame group; ``frame_order`` permutes the frames.
    """
    positions = slice_positions(len(pixels), spacing[2], origin, row, column)
    order = list(frame_order) if frame_order is not None else list(range(len(pixels)))
    dataset = _base_dataset(EnhancedMRImageStorage, pixels.shape[1:], generate_uid(), generate_uid(), generate_uid())
    dataset.NumberOfFrames = len(pixels)

    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = spacing[2]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8g}" for v in (*row, *column)]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    dataset.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for index in order:
        plane = Dataset()
        plane.ImagePositionPatient = [f"{v:.6g}" for v in positions[index]]
        group = Dataset()
        group.PlanePositionSequence = [plane]
        per_frame.append(group)
    dataset.PerFrameFunctionalGroupsSequence = per_frame
    dataset.PixelData = np.ascontiguousarray(pixels[order], dtype=np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def slice_positions(
    count: int,
    spacing_z: float,
    origin: Sequence[float],
    row: Sequence[float],
    column: Sequence[float],
) -> np.ndarray:
    """Return Image Position (Patient) of ``count`` slices stacked along the normal."""
    normal = np.cross(row, column)
    return np.asarray(origin, dtype=float) + np.outer(np.arange(count) * spacing_z, normal)


def _base_dataset(
    sop_class_uid: str,
    shape: tuple[int, int],
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientName = "Phantom^Test"
    dataset.PatientID = "TEST-0001"
    dataset.PatientSex = "F"
    dataset.PatientAge = "061Y"
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = frame_of_reference_uid
    dataset.Modality = "MR"
    dataset.Rows, dataset.Columns = int(shape[0]), int(shape[1])
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    return dataset
