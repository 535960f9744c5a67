"""Training of the MobileNetV2 U-Net on trimaps, exported as a model package.

The model from :func:`inference.unet.build_unet` learns three classes per
pixel (background, tumour, border band outside the tumour) with cross-entropy
plus a soft Dice term on the tumour class. After each epoch the validation
cases are scored; the weights of the epoch with the best validation DSC are
exported with :func:`inference.model_package.write_package`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from inference.model_package import SegmentationManifest, write_package
from inference.result import SequenceRole
from training.seg_data import (
    SegCase,
    SliceArrays,
    iterate_batches,
    mask_for_model,
    stack_slices,
    training_target,
)
from training.seg_eval import dice

logger = logging.getLogger(__name__)

DEMO_TRAINING_DATA = "synthetic MR phantoms from training.phantom (otscc-node demo)"
DEMO_INTENDED_USE = (
    "DEMO trained on synthetic phantoms, NOT FOR CLINICAL USE: exercises the node end to end"
)


@dataclass
class TrainConfig:
    """Settings of one segmentation training run."""

    channels: tuple[SequenceRole, ...] = (SequenceRole.CE_T1, SequenceRole.T2, SequenceRole.T1)
    input_size: int = 128
    alpha: float = 0.35
    batch_size: int = 2
    epochs: int = 40
    learning_rate: float = 1e-3
    border_px: int = 1
    negative_slices: int | None = 4
    dice_weight: float = 1.0
    # Cross-entropy weights of background, tumour and border: tumour pixels are
    # well under 1% of a slice, and without extra weight a short run stays on
    # the all-background plateau for many epochs.
    class_weights: tuple[float, float, float] = (1.0, 5.0, 2.0)
    dropout: float = 0.0
    batch_norm_momentum: float = 0.9
    # Eager steps skip the graph tracing of the first step (tens of seconds on
    # CPU) but each step is many times slower, so only tiny runs gain.
    run_eagerly: bool = False
    seed: int = 0
    encoder_weights: Path | None = None
    name: str = "otscc-tongue-seg"
    version: str = "0.1.0"
    is_demo: bool = True
    training_data: str = DEMO_TRAINING_DATA
    intended_use: str = DEMO_INTENDED_USE

    def __post_init__(self) -> None:
        self.channels = tuple(SequenceRole(c) for c in self.channels)
        if not self.channels:
            raise ValueError("channels is empty; list at least one of ce_t1, t2, t1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")

    def manifest(self, metrics: dict[str, float] | None = None) -> SegmentationManifest:
        """Return the manifest of a package trained with these settings."""
        return SegmentationManifest(
            name=self.name,
            version=self.version,
            input_size=(self.input_size, self.input_size),
            channels=self.channels,
            training_data=self.training_data,
            intended_use=self.intended_use,
            is_demo=self.is_demo,
            metrics=metrics or {},
        )


@dataclass
class EpochRecord:
    """Training loss and validation scores after one epoch."""

    epoch: int
    loss: float
    val_loss: float
    val_accuracy: float
    val_dsc: float
    val_mean_iou: float
    seconds: float


@dataclass
class TrainResult:
    """Outcome of a training run: history, best epoch and the exported package."""

    package: Path
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_dsc: float = 0.0
    seconds: float = 0.0


def trimap_loss(tumour_class: int, dice_weight: float, class_weights: Sequence[float]):
    """Return a Keras loss: class-weighted sparse cross-entropy on logits plus soft Dice loss.

    ``class_weights`` weights each pixel's cross-entropy by its true class;
    ``dice_weight`` scales the soft Dice loss of the tumour class.
    """
    import keras  # noqa: PLC0415 (TensorFlow start-up is slow, so import only to train)

    ops = keras.ops
    weights_by_class = ops.convert_to_tensor(np.asarray(class_weights, dtype="float32"))

    def loss(y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        pixel_weights = ops.take(weights_by_class, labels)
        pixel_losses = keras.losses.sparse_categorical_crossentropy(
            labels, y_pred, from_logits=True
        )
        cross_entropy = ops.sum(pixel_weights * pixel_losses) / ops.sum(pixel_weights)
        tumour_probability = ops.softmax(y_pred, axis=-1)[..., tumour_class]
        tumour_truth = ops.cast(ops.equal(labels, tumour_class), "float32")
        overlap = ops.sum(tumour_probability * tumour_truth)
        soft_dice = (2.0 * overlap + 1.0) / (
            ops.sum(tumour_probability) + ops.sum(tumour_truth) + 1.0
        )
        return cross_entropy + dice_weight * (1.0 - soft_dice)

    return loss


@dataclass
class _ValidationSet:
    """All slices of the validation cases, with each case's slice count."""

    slices: SliceArrays
    case_lengths: list[int]
    case_masks: list[np.ndarray]


def _validation_set(
    cases: Sequence[SegCase], config: TrainConfig, manifest: SegmentationManifest
) -> _ValidationSet:
    # Every slice is kept (negative_slices=None), so the stack is the cases' volumes one after another.
    slices = stack_slices(
        cases, manifest, border_px=config.border_px, negative_slices=None, seed=config.seed
    )
    masks = [mask_for_model(c.mask, c.reference, manifest.input_size) for c in cases]
    return _ValidationSet(slices=slices, case_lengths=[len(m) for m in masks], case_masks=masks)


def _predict_logits(model, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    parts = [
        np.asarray(model(inputs[start : start + batch_size], training=False))
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(parts)


def _validate(
    model, loss_fn, validation: _ValidationSet, manifest: SegmentationManifest
) -> dict[str, float]:
    logits = _predict_logits(model, validation.slices.inputs)
    targets = validation.slices.targets
    predicted = logits.argmax(axis=-1)

    ious = []
    for class_id in range(manifest.num_classes):
        union = np.logical_or(predicted == class_id, targets == class_id).sum()
        if union:
            ious.append(np.logical_and(predicted == class_id, targets == class_id).sum() / union)

    tumour = predicted == manifest.tumour_class
    bounds = np.cumsum([0, *validation.case_lengths])
    dscs = [
        dice(tumour[bounds[i] : bounds[i + 1]], mask)
        for i, mask in enumerate(validation.case_masks)
    ]
    return {
        "val_loss": float(loss_fn(targets, logits)),
        "val_accuracy": float((predicted == targets).mean()),
        "val_mean_iou": float(np.mean(ious)),
        "val_dsc": float(np.mean(dscs)),
    }


def train_segmentation(
    train_cases: Sequence[SegCase],
    val_cases: Sequence[SegCase],
    config: TrainConfig,
    out_dir: Path,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train a U-Net on ``train_cases`` and export the best epoch as a package in ``out_dir``.

    Parameters
    ----------
    train_cases, val_cases : sequence of SegCase
        Cases to learn from and to choose the best epoch by (validation DSC).
    config : TrainConfig
        Model size, channels, batch size, epochs and package identity.
    out_dir : Path
        Package folder to write (``model.keras`` and ``manifest.json``).
    progress : bool
        Show a tqdm progress bar per epoch.
    """
    import keras  # noqa: PLC0415 (TensorFlow start-up is slow, so import only to train)

    if not train_cases or not val_cases:
        raise ValueError(
            f"training needs at least one training and one validation case, got "
            f"{len(train_cases)} and {len(val_cases)}"
        )
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    manifest = config.manifest()
    train = stack_slices(
        train_cases,
        manifest,
        border_px=config.border_px,
        negative_slices=config.negative_slices,
        seed=config.seed,
    )
    validation = _validation_set(val_cases, config, manifest)
    logger.info(
        "Training on %d slices from %d cases, validating on %d cases",
        len(train),
        len(train_cases),
        len(val_cases),
    )

    model, loss_fn = _compiled_model(config, manifest)

    result = TrainResult(package=Path(out_dir), best_val_dsc=-1.0)
    best_weights = model.get_weights()
    rng = np.random.default_rng(config.seed)
    steps = -(-len(train) // config.batch_size)
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        bar = tqdm(
            iterate_batches(train, config.batch_size, rng),
            total=steps,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        losses = _train_epoch(model, bar)

        scores = _validate(model, loss_fn, validation, manifest)
        record = EpochRecord(
            epoch=epoch,
            loss=float(np.mean(losses)),
            seconds=time.perf_counter() - epoch_start,
            **scores,
        )
        result.history.append(record)
        if record.val_dsc > result.best_val_dsc:
            result.best_val_dsc, result.best_epoch = record.val_dsc, epoch
            best_weights = model.get_weights()
        _report_epoch(record, config.epochs, progress)

    model.set_weights(best_weights)
    result.seconds = time.perf_counter() - started
    metrics = {
        "val_dsc": round(result.best_val_dsc, 4),
        "best_epoch": float(result.best_epoch),
        "epochs": float(config.epochs),
        "training_seconds": round(result.seconds, 1),
        "training_cases": float(len(train_cases)),
        "validation_cases": float(len(val_cases)),
    }
    export = _without_optimizer(model, config, manifest.num_classes)
    write_package(export, Path(out_dir), config.manifest(metrics))
    return result


def _compiled_model(config: TrainConfig, manifest: SegmentationManifest):
    """Build the U-Net and compile it with the trimap loss; return the model and the loss."""
    import keras  # noqa: PLC0415

    from inference.unet import build_unet  # noqa: PLC0415

    model = build_unet(
        config.input_size,
        len(config.channels),
        manifest.num_classes,
        config.alpha,
        dropout=config.dropout,
        encoder_weights=config.encoder_weights,
    )
    _set_batch_norm_momentum(model, config.batch_norm_momentum)
    loss_fn = trimap_loss(manifest.tumour_class, config.dice_weight, config.class_weights)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss_fn,
        run_eagerly=config.run_eagerly,
    )
    return model, loss_fn


def _train_epoch(model, bar) -> list[float]:
    """Run one training step per batch of the progress bar; return the batch losses."""
    losses: list[float] = []
    for inputs, targets in bar:
        losses.append(float(model.train_on_batch(inputs, targets)))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return losses


def _without_optimizer(model, config: TrainConfig, num_classes: int):
    """Return a fresh, uncompiled U-Net with the trained weights.

    ``model.save`` stores the optimizer state of a compiled model, and Adam's
    two moment tensors per weight would triple the package's size.
    """
    from inference.unet import build_unet  # noqa: PLC0415

    copy = build_unet(
        config.input_size, len(config.channels), num_classes, config.alpha, dropout=config.dropout
    )
    copy.set_weights(model.get_weights())
    return copy


def _set_batch_norm_momentum(model, momentum: float) -> None:
    """Lower the moving-average momentum of every batch normalisation layer.

    With Keras' default of 0.99, the moving statistics used at inference need
    thousands of steps to match the batch statistics seen in training. A
    short CPU run has a few hundred, so its model then predicts background
    everywhere.
    """
    import keras  # noqa: PLC0415

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _set_batch_norm_momentum(layer, momentum)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _report_epoch(record: EpochRecord, epochs: int, progress: bool) -> None:
    message = (
        f"epoch {record.epoch}/{epochs}: loss {record.loss:.4f}, val_loss {record.val_loss:.4f}, "
        f"val_accuracy {record.val_accuracy:.4f}, val_dsc {record.val_dsc:.4f}, "
        f"val_mean_iou {record.val_mean_iou:.4f} ({record.seconds:.1f} s)"
    )
    if progress:
        tqdm.write(message)
    logger.info(message)
