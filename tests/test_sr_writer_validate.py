"""Tests of output validation: broken objects are rejected with the validator's message."""

from __future__ import annotations

import copy
import logging
import shutil

import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, SegmentationStorage

from sr_writer import WriterOptions, build_outputs
from sr_writer import validate
from sr_writer.errors import OutputValidationError
from sr_writer.validate import available_validators, dciodvfy_errors, validate_output

from . import sr_helpers as helpers


@pytest.fixture(scope="module")
def outputs() -> dict[str, pydicom.Dataset]:
    study = helpers.make_study()
    built = build_outputs(study.result, study.sources, WriterOptions())
    by_class = {ds.SOPClassUID: ds for ds in built}
    return {"seg": by_class[SegmentationStorage], "sr": by_class[ComprehensiveSRStorage]}


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


@pytest.mark.peers
def test_valid_objects_pass(outputs: dict[str, pydicom.Dataset]) -> None:
    for ds in outputs.values():
        validate_output(ds)


@pytest.mark.peers
def test_missing_type1_attribute_rejected(outputs: dict[str, pydicom.Dataset]) -> None:
    _require("dciodvfy")
    broken = copy.deepcopy(outputs["seg"])
    del broken.SegmentationType

    with pytest.raises(OutputValidationError, match=r"dciodvfy: Error .*SegmentationType") as raised:
        validate_output(broken)
    assert raised.value.validator == "dciodvfy"


@pytest.mark.peers
def test_invalid_sr_value_rejected(outputs: dict[str, pydicom.Dataset]) -> None:
    _require("dciodvfy")
    broken = copy.deepcopy(outputs["sr"])
    broken.CompletionFlag = "FINISHED"

    with pytest.raises(OutputValidationError, match=r"dciodvfy: Error .*Completion ?Flag"):
        validate_output(broken)


def test_unreadable_report_rejected_by_highdicom(
    outputs: dict[str, pydicom.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the external tools only the highdicom read-back runs.
    monkeypatch.setattr(validate.shutil, "which", lambda name: None)
    broken = copy.deepcopy(outputs["sr"])
    template = pydicom.Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "1501"
    broken.ContentTemplateSequence = [template]

    with pytest.raises(OutputValidationError, match="highdicom could not read back") as raised:
        validate_output(broken)
    assert raised.value.validator == "highdicom"


def test_missing_tool_warns_once(
    outputs: dict[str, pydicom.Dataset], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(validate.shutil, "which", lambda name: None)
    monkeypatch.setattr(validate, "_warned_missing", set())
    caplog.set_level(logging.WARNING, logger="sr_writer.validate")

    validate_output(outputs["sr"])
    validate_output(outputs["sr"])
    warnings = [record.getMessage() for record in caplog.records]

    assert sum("dciodvfy is not installed" in message for message in warnings) == 1
    assert sum("dsrdump is not installed" in message for message in warnings) == 1


def test_available_validators_reports_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate.shutil, "which", lambda name: None)

    assert available_validators() == {"dciodvfy": False, "dsrdump": False, "highdicom": True}


def test_dciodvfy_errors_ignore_warnings() -> None:
    output = (
        "Segmentation\n"
        "Warning - Unrecognized defined term = <99OTSCC>\n"
        "Error - Missing attribute Type 1 Required Element=<SegmentationType>\n"
    )

    assert dciodvfy_errors(output) == ["Error - Missing attribute Type 1 Required Element=<SegmentationType>"]
