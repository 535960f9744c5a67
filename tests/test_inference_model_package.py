"""Tests for the MobileNetV2 U-Net and segmentation model packages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from inference.errors import ModelPackageError
from inference.model_package import (
    MANIFEST_FILE,
    LoadedSegmentationModel,
    SegmentationManifest,
    clear_model_cache,
    file_sha256,
    load_manifest,
    load_segmentation_model,
    write_package,
)
from inference.result import SequenceRole
from inference.unet import build_unet
from tests.inference_helpers import TINY_DECODER, make_manifest, write_tiny_package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_package(tmp_path_factory.mktemp("package"), channels=("ce_t1", "t2", "t1"))


def test_unet_output_shape_is_logits_per_pixel() -> None:
    model = build_unet(32, 3, 3, decoder_filters=TINY_DECODER)
    output = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32), training=False))
    assert output.shape == (2, 32, 32, 3)


def test_unet_accepts_single_channel() -> None:
    model = build_unet(64, 1, 3, decoder_filters=TINY_DECODER)
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 64, 64, 3)


def test_unet_rejects_size_not_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="input_size must be a positive multiple of 32"):
        build_unet(100, 3)


def test_package_round_trip_keeps_manifest_and_outputs(package: Path) -> None:
    loaded = load_segmentation_model(package)
    manifest = load_manifest(package)
    assert loaded.manifest == manifest
    assert loaded.roles == (SequenceRole.CE_T1, SequenceRole.T2, SequenceRole.T1)
    assert manifest.weights_sha256 == file_sha256(package / "model.keras")
    assert loaded.identity.sha256 == manifest.weights_sha256
    assert loaded.identity.is_demo is True
    assert manifest.class_ids == {"background": 0, "tumour": 1, "border": 2}

    batch = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    first = loaded.predict_logits(batch)
    second = loaded.predict_logits(batch)
    assert first.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(first, second)


def test_package_load_is_cached_per_process(package: Path) -> None:
    first = load_segmentation_model(package)
    second = load_segmentation_model(package)
    assert first is second
    clear_model_cache()
    third = load_segmentation_model(package)
    assert third is not first
    assert third.sha256 == first.sha256


def test_package_sha_mismatch_rejected(tmp_path: Path) -> None:
    folder = write_tiny_package(tmp_path / "pkg", channels=("t2",))
    data = json.loads((folder / MANIFEST_FILE).read_text())
    data["weights_sha256"] = "0" * 64
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelPackageError, match="SHA-256 .* but the manifest records 0000"):
        load_segmentation_model(folder)


def test_package_with_one_channel_loads(tmp_path: Path) -> None:
    folder = write_tiny_package(tmp_path / "pkg", channels=("t2",))
    loaded = load_segmentation_model(folder)
    assert loaded.roles == (SequenceRole.T2,)
    assert loaded.model.input_shape == (None, 32, 32, 1)


def test_write_package_rejects_model_manifest_mismatch(tmp_path: Path) -> None:
    model = build_unet(32, 1, 3, decoder_filters=TINY_DECODER)
    manifest = make_manifest(channels=("ce_t1", "t2"))
    with pytest.raises(ModelPackageError, match=r"input shape \(32, 32, 1\) does not match"):
        write_package(model, tmp_path / "pkg", manifest)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "field name must be a non-empty string"),
        ("kind", "classifier", "field kind must be 'segmentation'"),
        ("input_size", [32], r"field input_size must be \[height, width\]"),
        ("channels", ["ce_t1", "flair"], "channels has unknown role 'flair'"),
        ("channels", ["t2", "t2"], "channels lists a role twice"),
        ("class_ids", {"background": 0, "border": 1}, r"class_ids is missing classes \['tumour'\]"),
        ("class_ids", {"background": 0, "tumour": 2}, "without gaps"),
        ("normalisation", {"method": "histogram"}, "normalisation.method 'histogram'"),
        ("normalisation", {"clip_percentiles": [99, 1]}, "low < high"),
        ("weights_sha256", "abc", "64 lowercase hex digits"),
        ("weights_file", "../model.keras", "file name inside the package folder"),
        ("is_demo", "yes", "is_demo must be true or false"),
        ("created", "yesterday", "ISO 8601"),
        ("schema_version", 7, "schema_version is 7"),
    ],
)
def test_manifest_field_validation_names_field(field: str, value: object, message: str) -> None:
    data = make_manifest(channels=("ce_t1", "t2", "t1")).to_dict()
    data[field] = value
    with pytest.raises(ModelPackageError, match=message):
        SegmentationManifest.from_dict(data)


def test_manifest_missing_and_unknown_fields_rejected() -> None:
    data = make_manifest(channels=("t2",)).to_dict()
    del data["intended_use"]
    with pytest.raises(ModelPackageError, match=r"missing required fields \['intended_use'\]"):
        SegmentationManifest.from_dict(data)

    data = make_manifest(channels=("t2",)).to_dict()
    data["wieghts_file"] = "x.keras"
    with pytest.raises(ModelPackageError, match=r"unknown fields \['wieghts_file'\]"):
        SegmentationManifest.from_dict(data)


def test_manifest_json_round_trip_is_identical() -> None:
    manifest = make_manifest(channels=("ce_t1", "t2"))
    manifest = dataclasses.replace(manifest, metrics={"dice": 0.8})
    assert SegmentationManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def test_missing_manifest_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="has no manifest.json"):
        load_manifest(tmp_path)


def test_loaded_model_type_is_exported(package: Path) -> None:
    assert isinstance(load_segmentation_model(package), LoadedSegmentationModel)
