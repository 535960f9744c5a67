"""Deterministic UIDs and free SeriesNumbers for the node's outputs.

A re-run on the same inputs with the same model must send the same objects,
so that a PACS stores one copy and not a new series per retry. The UIDs are
therefore name-based (SHA-1, version 5) UUIDs of the inputs, written as
``2.25.<decimal UUID>`` UIDs (PS3.5 section B.2). pydicom's ``generate_uid``
is not used because it ignores its entropy sources when asked for a ``2.25``
UID (pydicom 3.0).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Iterable

from inference.result import ModelIdentity, PipelineResult

from .options import WriterOptions


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "otscc-node")


def stable_uid(*parts: str) -> str:
    """Return the ``2.25`` UID of the name-based UUID of ``parts``; equal parts give equal UIDs."""
    # The unit separator keeps ("ab", "c") and ("a", "bc") apart.
    name = "\x1f".join(parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


class OutputKind(enum.Enum):
    """The objects the node writes, with their SeriesNumber offset."""

    SEG = "seg"
    SR = "sr"
    SECONDARY_CAPTURE = "sc"
    FAILURE_REPORT = "failure_sr"


def input_entropy(result: PipelineResult) -> list[str]:
    """Return the strings that identify one run's inputs and models.

    The study, every input series with its instances in slice order, and
    every model's name, version and SHA-256 enter the hash, so that a
    re-sent series with one more instance or a new model gives new UIDs.
    """
    sources = [result.study_instance_uid]
    for role in sorted(result.series, key=lambda item: item.value):
        used = result.series[role]
        sources.append(f"{role.value}={used.series_instance_uid}")
        sources.extend(used.sop_instance_uids)
    sources.extend(_model_entropy(result.models))
    return sources


def _model_entropy(models: Iterable[ModelIdentity]) -> list[str]:
    return [f"{model.name}|{model.version}|{model.sha256}" for model in models]


def derive_uids(entropy: list[str], kind: OutputKind) -> tuple[str, str]:
    """Return (SeriesInstanceUID, SOPInstanceUID) for one output object."""
    series_uid = stable_uid(*entropy, kind.value, "series")
    instance_uid = stable_uid(*entropy, kind.value, "instance")
    return series_uid, instance_uid


def device_uid(options: WriterOptions) -> str:
    """Return the Device Observer UID: the configured one, or one derived from the node's identity."""
    if options.device_uid:
        return options.device_uid
    return stable_uid(
        "device", options.manufacturer, options.manufacturer_model_name, options.device_serial_number
    )


def allocate_series_numbers(
    kinds: Iterable[OutputKind], base: int, existing: Collection[int]
) -> dict[OutputKind, int]:
    """Give each output kind the next SeriesNumber from ``base`` that the study does not use."""
    used_numbers = set(int(number) for number in existing)
    numbers: dict[OutputKind, int] = {}
    candidate = base
    for kind in kinds:
        while candidate in used_numbers:
            candidate += 1
        numbers[kind] = candidate
        used_numbers.add(candidate)
    return numbers
