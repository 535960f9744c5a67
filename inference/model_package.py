"""Segmentation model packages: a Keras model file beside a JSON manifest.

A package is a folder with ``model.keras`` and ``manifest.json``. The
manifest states what the model expects (input size, sequence channels,
normalisation, class ids), where it came from, and the SHA-256 of the weights
file, which :func:`load_segmentation_model` checks before it loads anything.
Training writes packages; the pipeline only reads them.

Keras and TensorFlow are imported only when a model is written or loaded, so
reading and validating a manifest stays cheap.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.errors import ModelPackageError
from inference.result import ModelIdentity, SequenceRole

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
DEFAULT_WEIGHTS_FILE = "model.keras"
SEGMENTATION_KIND = "segmentation"

DEFAULT_CLASS_IDS: dict[str, int] = {"background": 0, "tumour": 1, "border": 2}
REQUIRED_CLASSES = ("background", "tumour")


class NormalisationMethod(enum.Enum):
    """Intensity scaling applied to each input volume before its slices reach the model."""

    # Clip to the given percentiles of the volume, then subtract the mean and
    # divide by the standard deviation of the clipped voxels.
    ZSCORE_PER_VOLUME = "zscore_per_volume"
    # Clip to the given percentiles, then map that range linearly to [0, 1].
    MINMAX_PER_VOLUME = "minmax_per_volume"


@dataclass(frozen=True)
class Normalisation:
    """Intensity normalisation of one input volume, applied per volume.

    Attributes
    ----------
    method : NormalisationMethod
        Scaling applied after clipping.
    clip_percentiles : tuple of float
        Lower and upper percentiles of the volume's voxels to clip to.
    """

    method: NormalisationMethod = NormalisationMethod.ZSCORE_PER_VOLUME
    clip_percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        try:
            method = NormalisationMethod(self.method)
        except ValueError as exc:
            allowed = ", ".join(m.value for m in NormalisationMethod)
            raise ModelPackageError(
                f"normalisation.method {self.method!r} is not supported; use one of {allowed}"
            ) from exc
        object.__setattr__(self, "method", method)

        low, high = _pair_of_floats(self.clip_percentiles, "normalisation.clip_percentiles")
        if not 0.0 <= low < high <= 100.0:
            raise ModelPackageError(
                f"normalisation.clip_percentiles must satisfy 0 <= low < high <= 100, "
                f"got {[low, high]}"
            )
        object.__setattr__(self, "clip_percentiles", (low, high))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form stored in the manifest."""
        return {"method": self.method.value, "clip_percentiles": list(self.clip_percentiles)}

    @classmethod
    def from_dict(cls, data: object) -> Normalisation:
        """Build from the manifest's JSON object, rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise ModelPackageError(
                f"normalisation must be a JSON object, got {type(data).__name__}"
            )
        unknown = set(data) - {"method", "clip_percentiles"}
        if unknown:
            raise ModelPackageError(
                f"normalisation has unknown keys {sorted(unknown)}; "
                "allowed keys are method and clip_percentiles"
            )
        return cls(**data)


@dataclass(frozen=True)
class SegmentationManifest:
    """The manifest of a segmentation model package.

    Construction validates every field and raises
    :class:`~inference.errors.ModelPackageError` naming the first bad one.
    ``channels`` accepts :class:`SequenceRole` members or their string values
    and stores members, in the model's channel order.
    """

    name: str
    version: str
    input_size: tuple[int, int]
    channels: tuple[SequenceRole, ...]
    training_data: str
    intended_use: str
    is_demo: bool
    normalisation: Normalisation = field(default_factory=Normalisation)
    class_ids: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CLASS_IDS))
    kind: str = SEGMENTATION_KIND
    weights_file: str = DEFAULT_WEIGHTS_FILE
    weights_sha256: str = ""
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    metrics: Mapping[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self._check_text_fields()
        self._check_schema_and_kind()
        object.__setattr__(self, "input_size", _check_input_size(self.input_size))
        object.__setattr__(self, "channels", _check_channels(self.channels))
        object.__setattr__(self, "class_ids", _check_class_ids(self.class_ids))
        if isinstance(self.normalisation, Mapping):
            object.__setattr__(self, "normalisation", Normalisation.from_dict(self.normalisation))
        elif not isinstance(self.normalisation, Normalisation):
            raise ModelPackageError(
                f"normalisation must be a Normalisation or a JSON object, "
                f"got {type(self.normalisation).__name__}"
            )
        object.__setattr__(self, "metrics", _check_metrics(self.metrics))
        self._check_weights_fields()

    def _check_text_fields(self) -> None:
        for name in ("name", "version", "training_data", "intended_use", "created"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ModelPackageError(f"manifest field {name} must be a non-empty string, got {value!r}")
        if not isinstance(self.is_demo, bool):
            raise ModelPackageError(f"manifest field is_demo must be true or false, got {self.is_demo!r}")
        try:
            datetime.datetime.fromisoformat(self.created)
        except ValueError as exc:
            raise ModelPackageError(
                f"manifest field created must be an ISO 8601 time, got {self.created!r}"
            ) from exc

    def _check_schema_and_kind(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ModelPackageError(
                f"manifest field schema_version is {self.schema_version!r}, but this node reads "
                f"version {SCHEMA_VERSION}; rebuild the package with a matching training release"
            )
        if self.kind != SEGMENTATION_KIND:
            raise ModelPackageError(
                f"manifest field kind must be {SEGMENTATION_KIND!r}, got {self.kind!r}"
            )

    def _check_weights_fields(self) -> None:
        if not isinstance(self.weights_file, str) or not self.weights_file.endswith(".keras"):
            raise ModelPackageError(
                f"manifest field weights_file must name a .keras file, got {self.weights_file!r}"
            )
        if Path(self.weights_file).name != self.weights_file:
            raise ModelPackageError(
                f"manifest field weights_file must be a file name inside the package folder, "
                f"got {self.weights_file!r}"
            )
        sha = self.weights_sha256
        if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise ModelPackageError(
                f"manifest field weights_sha256 must be 64 lowercase hex digits, got {sha!r}"
            )

    @property
    def num_classes(self) -> int:
        """Number of model output classes, one per class id."""
        return len(self.class_ids)

    @property
    def tumour_class(self) -> int:
        """Class id of the tumour."""
        return self.class_ids["tumour"]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``manifest.json``."""
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "is_demo": self.is_demo,
            "input_size": list(self.input_size),
            "channels": [role.value for role in self.channels],
            "normalisation": self.normalisation.to_dict(),
            "class_ids": dict(self.class_ids),
            "weights_file": self.weights_file,
            "weights_sha256": self.weights_sha256,
            "training_data": self.training_data,
            "intended_use": self.intended_use,
            "created": self.created,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: object) -> SegmentationManifest:
        """Build from the parsed JSON of ``manifest.json``.

        Raises
        ------
        ModelPackageError
            If a field is missing, unknown or invalid.
        """
        if not isinstance(data, Mapping):
            raise ModelPackageError(f"manifest must be a JSON object, got {type(data).__name__}")

        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelPackageError(
                f"manifest has unknown fields {sorted(unknown)}; check their spelling"
            )
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        required |= {"weights_sha256", "schema_version", "kind", "created"}
        missing = required - set(data)
        if missing:
            raise ModelPackageError(f"manifest is missing required fields {sorted(missing)}")
        return cls(**data)


def _pair_of_floats(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ModelPackageError(f"{name} must be a list of two numbers, got {value!r}")
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError) as exc:
        raise ModelPackageError(f"{name} must be a list of two numbers, got {value!r}") from exc


def _check_input_size(value: object) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ModelPackageError(
            f"manifest field input_size must be [height, width] in positive pixels, got {value!r}"
        )
    return int(value[0]), int(value[1])


def _check_channels(value: object) -> tuple[SequenceRole, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ModelPackageError(
            f"manifest field channels must be a non-empty list of sequence roles, got {value!r}"
        )
    roles = []
    for item in value:
        try:
            roles.append(SequenceRole(item))
        except ValueError as exc:
            allowed = ", ".join(r.value for r in SequenceRole)
            raise ModelPackageError(
                f"manifest field channels has unknown role {item!r}; use one of {allowed}"
            ) from exc
    if len(set(roles)) != len(roles):
        raise ModelPackageError(f"manifest field channels lists a role twice: {value!r}")
    return tuple(roles)


def _check_class_ids(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ModelPackageError(f"manifest field class_ids must be a JSON object, got {value!r}")
    missing = [name for name in REQUIRED_CLASSES if name not in value]
    if missing:
        raise ModelPackageError(f"manifest field class_ids is missing classes {missing}")
    ids = sorted(value.values())
    if ids != list(range(len(value))):
        raise ModelPackageError(
            f"manifest field class_ids must number the classes 0..{len(value) - 1} without gaps, "
            f"got {dict(value)}"
        )
    return {str(k): int(v) for k, v in value.items()}


def _check_metrics(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ModelPackageError(f"manifest field metrics must be a JSON object, got {value!r}")
    try:
        return {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise ModelPackageError(
            f"manifest field metrics must map names to numbers, got {dict(value)!r}"
        ) from exc


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(folder: Path) -> SegmentationManifest:
    """Read and validate ``manifest.json`` in a package folder.

    Raises
    ------
    ModelPackageError
        If the file is missing, is not JSON, or has a bad field.
    """
    path = Path(folder) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelPackageError(
            f"model package {folder} has no {MANIFEST_FILE}",
            hint="point the node at a folder written by the training tools",
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{path} is not valid JSON: {exc}") from exc
    return SegmentationManifest.from_dict(data)


def write_package(model: keras.Model, folder: Path, manifest: SegmentationManifest) -> Path:
    """Save a model and its manifest as a package, recording the weights' SHA-256.

    Parameters
    ----------
    model : keras.Model
        The segmentation model; its input and output shapes must match the manifest.
    folder : Path
        Package folder, created if needed. Existing package files are replaced.
    manifest : SegmentationManifest
        Manifest to write; its ``weights_sha256`` is replaced by the digest of
        the saved file.

    Returns
    -------
    Path
        The package folder.
    """
    _check_model_matches(model, manifest, source="model")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = folder / manifest.weights_file
    model.save(weights_path)

    final = dataclasses.replace(manifest, weights_sha256=file_sha256(weights_path))
    manifest_path = folder / MANIFEST_FILE
    manifest_path.write_text(json.dumps(final.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote model package %s %s to %s", final.name, final.version, folder)
    return folder


def _check_model_matches(model: keras.Model, manifest: SegmentationManifest, *, source: str) -> None:
    expected_in = (*manifest.input_size, len(manifest.channels))
    actual_in = tuple(model.input_shape[1:])
    if actual_in != expected_in:
        raise ModelPackageError(
            f"{source} input shape {actual_in} does not match the manifest's input_size and "
            f"channels {expected_in}"
        )
    actual_classes = model.output_shape[-1]
    if actual_classes != manifest.num_classes:
        raise ModelPackageError(
            f"{source} outputs {actual_classes} classes but the manifest's class_ids "
            f"list {manifest.num_classes}"
        )


@dataclass(frozen=True)
class LoadedSegmentationModel:
    """A verified model package in memory, ready to predict."""

    folder: Path
    manifest: SegmentationManifest
    sha256: str
    model: keras.Model = field(repr=False, compare=False)

    @property
    def identity(self) -> ModelIdentity:
        """Identity of the package for results and reports."""
        manifest = self.manifest
        return ModelIdentity(
            name=manifest.name,
            version=manifest.version,
            kind=manifest.kind,
            sha256=self.sha256,
            is_demo=manifest.is_demo,
            training_data=manifest.training_data,
            intended_use=manifest.intended_use,
        )

    @property
    def roles(self) -> tuple[SequenceRole, ...]:
        """Sequence roles the model reads, in channel order."""
        return self.manifest.channels

    def predict_labels(self, batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Return uint8 class ids ``(n, *size)`` for a float32 batch ``(n, h, w, channels)``.

        Class probabilities (softmax of the logits) are resized bilinearly to
        ``size`` before the argmax, which gives smoother edges than resizing
        the labels. The model, the resize and the argmax run in one compiled
        TensorFlow function, in inference mode.
        """
        function = self.__dict__.get("_labels_function")
        if function is None:
            function = _compile_labels_function(self.model)
            # The dataclass is frozen, so the compiled function is cached in
            # the instance dictionary directly.
            self.__dict__["_labels_function"] = function
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return function(batch, np.asarray(size, dtype=np.int32)).numpy()

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Return logits ``(n, h, w, classes)`` for a float32 batch ``(n, h, w, channels)``.

        The model runs in inference mode (``training=False``), so batch
        normalisation uses its stored statistics and dropout is off.
        """
        output = self.model(np.ascontiguousarray(batch, dtype=np.float32), training=False)
        # TensorFlow tensors convert with .numpy(); np.asarray on them warns under NumPy 2.
        return output.numpy() if hasattr(output, "numpy") else np.asarray(output)


def _compile_labels_function(model: keras.Model):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow start-up is slow, so import only when needed)

    # A fixed signature with any batch size and any output size makes
    # TensorFlow trace the model once, not once per batch or image shape.
    signature = [
        tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
        tf.TensorSpec([2], tf.int32),
    ]

    @tf.function(input_signature=signature)
    def labels(batch, size):
        probabilities = tf.nn.softmax(model(batch, training=False), axis=-1)
        resized = tf.image.resize(probabilities, size, method="bilinear")
        return tf.cast(tf.argmax(resized, axis=-1), tf.uint8)

    return labels


_cache: dict[tuple[Path, str], LoadedSegmentationModel] = {}
_cache_lock = threading.Lock()


def load_segmentation_model(folder: Path) -> LoadedSegmentationModel:
    """Load a segmentation package after checking its weights against the manifest.

    The weights file is hashed on every call. A model whose path and digest
    were loaded before in this process is returned from a cache, so jobs
    share one copy.

    Raises
    ------
    ModelPackageError
        If the manifest is invalid, the weights file is missing, its SHA-256
        differs from the manifest, or the model does not match the manifest.
    """
    folder = Path(folder).resolve()
    manifest = load_manifest(folder)
    weights_path = folder / manifest.weights_file
    if not weights_path.is_file():
        raise ModelPackageError(f"model package {folder} has no weights file {manifest.weights_file}")

    sha = file_sha256(weights_path)
    if sha != manifest.weights_sha256:
        raise ModelPackageError(
            f"weights file {weights_path} has SHA-256 {sha}, but the manifest records "
            f"{manifest.weights_sha256 or 'none'}",
            hint="the weights were changed or corrupted; reinstall the model package",
        )

    key = (folder, sha)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        loaded = LoadedSegmentationModel(
            folder=folder, manifest=manifest, sha256=sha, model=_load_keras_model(weights_path)
        )
        _check_model_matches(loaded.model, manifest, source=f"model in {weights_path}")
        _cache[key] = loaded

    logger.info("Loaded segmentation model %s %s (sha256 %s)", manifest.name, manifest.version, sha)
    return loaded


def _load_keras_model(path: Path) -> keras.Model:
    import keras  # noqa: PLC0415 (TensorFlow start-up is slow, so import only when a model loads)

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError) as exc:
        raise ModelPackageError(f"weights file {path} could not be loaded by Keras: {exc}") from exc


def clear_model_cache() -> None:
    """Forget every cached model, so the next load reads its package again."""
    with _cache_lock:
        _cache.clear()
