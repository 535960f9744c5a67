"""MobileNetV2 U-Net for slice-wise tumour segmentation.

The encoder is ``keras.applications.MobileNetV2`` without its classifier. The
decoder follows the pix2pix upsampling pattern: each block doubles the
resolution with a strided transposed convolution, normalises, applies ReLU and
concatenates the encoder activation of the same resolution.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras

logger = logging.getLogger(__name__)

# Encoder activations used as skip connections, from 1/2 down to 1/32 of the
# input resolution. The last one is the bottleneck that the decoder starts from.
SKIP_LAYER_NAMES: tuple[str, ...] = (
    "block_1_expand_relu",
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_13_expand_relu",
    "block_16_project",
)

DEFAULT_DECODER_FILTERS: tuple[int, ...] = (128, 64, 32, 16)

# MobileNetV2 halves the resolution five times, so the input must divide by 32.
INPUT_SIZE_MULTIPLE = 32


def build_unet(
    input_size: int = 128,
    channels: int = 3,
    num_classes: int = 3,
    alpha: float = 0.35,
    decoder_filters: Sequence[int] = DEFAULT_DECODER_FILTERS,
    *,
    dropout: float = 0.0,
    encoder_weights: str | Path | None = None,
) -> keras.Model:
    """Build a U-Net with a MobileNetV2 encoder that outputs per-pixel logits.

    Parameters
    ----------
    input_size : int
        Height and width of the square input slices in pixels; a multiple of 32.
    channels : int
        Number of input channels, one per MR sequence. Any count works because
        the encoder starts from random or local weights, never ImageNet's.
    num_classes : int
        Number of output classes (the trimap has three).
    alpha : float
        MobileNetV2 width multiplier; 0.35 keeps the model a few megabytes.
    decoder_filters : sequence of int
        Filters of the four upsampling blocks, from the bottleneck outwards.
    dropout : float
        Dropout rate after each upsampling block; 0 disables dropout.
    encoder_weights : str or Path or None
        A local weights file for the encoder, or None for random initialisation.

    Returns
    -------
    keras.Model
        Model mapping ``(batch, input_size, input_size, channels)`` float32
        input to ``(batch, input_size, input_size, num_classes)`` logits.
    """
    _check_arguments(input_size, channels, num_classes, decoder_filters, dropout, encoder_weights)

    inputs = keras.Input(shape=(input_size, input_size, channels), name="slices")
    encoder = _build_encoder(input_size, channels, alpha, encoder_weights)
    skips = encoder(inputs)

    x = skips[-1]
    for index, (filters, skip) in enumerate(zip(decoder_filters, reversed(skips[:-1]))):
        x = _upsample_block(x, filters, dropout, name=f"decoder_{index}")
        x = keras.layers.Concatenate(name=f"decoder_{index}_concat")([x, skip])

    logits = keras.layers.Conv2DTranspose(
        num_classes, 3, strides=2, padding="same", name="logits"
    )(x)
    return keras.Model(inputs=inputs, outputs=logits, name="mobilenetv2_unet")


def _check_arguments(
    input_size: int,
    channels: int,
    num_classes: int,
    decoder_filters: Sequence[int],
    dropout: float,
    encoder_weights: str | Path | None,
) -> None:
    if input_size <= 0 or input_size % INPUT_SIZE_MULTIPLE:
        raise ValueError(
            f"input_size must be a positive multiple of {INPUT_SIZE_MULTIPLE}, got {input_size}; "
            "choose for example 64, 128 or 256"
        )
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if len(decoder_filters) != len(SKIP_LAYER_NAMES) - 1:
        raise ValueError(
            f"decoder_filters must have {len(SKIP_LAYER_NAMES) - 1} values, one per "
            f"upsampling block, got {list(decoder_filters)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if encoder_weights is not None and not Path(encoder_weights).is_file():
        raise ValueError(
            f"encoder_weights file {encoder_weights} was not found; pass an existing "
            "local weights file or None"
        )


def _build_encoder(
    input_size: int, channels: int, alpha: float, encoder_weights: str | Path | None
) -> keras.Model:
    with warnings.catch_warnings():
        # Keras warns about channel counts other than 1 or 3 because ImageNet
        # weights need 3, but this encoder never loads ImageNet weights.
        warnings.filterwarnings("ignore", message="This model usually expects 1 or 3 input channels")
        backbone = keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, channels),
            include_top=False,
            weights=None,
            alpha=alpha,
        )
    if encoder_weights is not None:
        backbone.load_weights(str(encoder_weights))
        logger.info("Loaded encoder weights from %s", encoder_weights)

    outputs = [backbone.get_layer(name).output for name in SKIP_LAYER_NAMES]
    return keras.Model(inputs=backbone.input, outputs=outputs, name="encoder")


def _upsample_block(x: keras.KerasTensor, filters: int, dropout: float, *, name: str):
    x = keras.layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", use_bias=False, name=f"{name}_deconv"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)
