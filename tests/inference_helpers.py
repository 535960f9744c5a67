"""Builders shared by the inference tests: tiny model packages and DICOM series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inference.model_package import SegmentationManifest, write_package
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
