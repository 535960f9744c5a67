"""The dashboard's message catalogue and language choice."""

from __future__ import annotations

import re

import pytest

from db.states import DeliveryState, JobState, StudyState
from dicom_node.dashboard.i18n import CHINESE, ENGLISH, language_from_accept, normalise_language, translator
from dicom_node.dashboard.patient import display_name, format_person_name, mask


def test_catalogues_have_same_keys() -> None:
    assert set(CHINESE) == set(ENGLISH)


def test_catalogues_have_same_placeholders() -> None:
    for key, english in ENGLISH.items():
        assert set(re.findall(r"{(\w+)}", CHINESE[key])) == set(re.findall(r"{(\w+)}", english)), key


def test_every_state_translated() -> None:
    for state in [*JobState, *DeliveryState, *StudyState]:
        assert f"state.{state.value}" in ENGLISH, state


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-GB,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR,zh;q=0.5", "zh-CN"),
        ("zh-TW,en;q=0.5", "en"),
        ("de-DE", "en"),
        ("en;q=0.2, zh-Hans;q=0.9", "zh-CN"),
        ("zh-CN;q=0", "en"),
    ],
)
def test_language_from_accept_header(header: str | None, language: str) -> None:
    assert language_from_accept(header) == language


def test_language_switch_values() -> None:
    assert normalise_language("zh-CN") == "zh-CN"
    assert normalise_language("en") == "en"
    assert normalise_language("xx") is None


def test_translator_falls_back_to_english() -> None:
    chinese = translator("zh-CN")
    assert chinese("action.retry_job") == "重试任务"
    assert chinese("list.total", total=3) == "共 3 个任务"
    assert chinese("no.such.key") == "no.such.key"


def test_patient_name_masked_and_formatted() -> None:
    assert mask("Zhang San") == "Z***"
    assert mask("") == ""
    assert format_person_name("Zhang^San=张^三") == "Zhang San / 张 三"
    assert display_name("张^三", show=False) == "张***"
    assert display_name("张^三", show=True) == "张 三"
