"""Job event reasons in Simplified Chinese: each reason literal of the event-writing modules has a Chinese form.

Reasons passed as variables (study assembly failures, messages) are covered
by the table of examples instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dicom_node.event_text import event_reason

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
# The modules that write job events; each reason literal in them must match a pattern.
EVENT_MODULES = ("jobs.py", "outbox.py", "runner.py", "actions.py", "completion.py")
SAMPLE_VALUE = "7"


def _literal_reasons(module: Path) -> list[str]:
    """Return each string or f-string given as ``reason`` in ``module``, with placeholders set to 7."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    values: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            values.append(node.value)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
            values.append(node.value)
    reasons = [reason for value in values for reason in _samples(value)]
    # A reason made only of placeholders, such as a prefix and a message, has no sentence of its own.
    return [reason for reason in reasons if any(character.isalpha() for character in reason)]


def _samples(value: ast.expr) -> list[str]:
    """Return the texts a string, f-string or conditional expression can give, placeholders set to 7."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return [value.value]
    if isinstance(value, ast.JoinedStr):
        return ["".join(part.value if isinstance(part, ast.Constant) else SAMPLE_VALUE for part in value.values)]
    if isinstance(value, ast.IfExp):
        return _samples(value.body) + _samples(value.orelse)
    return []


def _node_reasons() -> list[str]:
    reasons = []
    for name in EVENT_MODULES:
        reasons += _literal_reasons(REPOSITORY_ROOT / "dicom_node" / name)
    return reasons


def test_source_scan_finds_reasons() -> None:
    reasons = _node_reasons()
    assert "picked up by worker" in reasons
    assert "results delivered to every destination" in reasons
    assert "new instances after job 7; a new run will supersede it" in reasons
    assert len(reasons) >= 20


@pytest.mark.parametrize("reason", _node_reasons())
def test_every_node_reason_has_chinese_form(reason: str) -> None:
    translated = event_reason(reason, "zh-CN")
    assert translated != reason
    assert not any("a" <= character <= "z" for character in translated.replace(SAMPLE_VALUE, ""))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("first instance received", "收到第一个实例"),
        (
            "delivery to pacs failed: cannot connect to 127.0.0.1:4242 (connection refused, unreachable or timed out); "
            "retrying in 30 s",
            "发送到 pacs 失败：cannot connect to 127.0.0.1:4242 (connection refused, unreachable or timed out)；30 秒后重试",
        ),
        (
            "study complete after 10.7 s without new instances: CE-T1 series 5 'T1 SE axial +C', T2 series 3 'T2 TSE'",
            "检查已完整（10.7 秒内没有新实例）：CE-T1 series 5 'T1 SE axial +C', T2 series 3 'T2 TSE'",
        ),
        (
            "study not complete yet: CE-T1 missing; T1 missing; waiting up to 600 s after the last instance",
            "检查尚不完整：缺少 CE-T1；缺少 T1；最后一个实例之后最多等待 600 秒",
        ),
        ("2 pending deliveries cancelled: retry requested by admin", "已取消 2 项待完成的发送：admin 请求重新处理"),
        ("delivery to pacs cancelled: job is superseded", "已取消向 pacs 的发送：任务状态为 已被取代"),
        (
            "Series 5 'T1 SE axial': slice gap of 12.0 mm between positions 30.0 and 42.0",
            "序列 5 'T1 SE axial'：slice gap of 12.0 mm between positions 30.0 and 42.0",
        ),
        (
            "series roles of the study could not be evaluated: KeyError: 'SeriesNumber'",
            "无法判定本检查各序列的角色：KeyError: 'SeriesNumber'",
        ),
        (
            "force-complete requested by admin: Required series T1 not received within 0 s of the last instance: "
            "no series matched",
            "admin 要求强制完成：在最后一个实例之后 0 秒内未收到所需序列 T1：no series matched",
        ),
    ],
)
def test_reason_renders_in_chinese(reason: str, expected: str) -> None:
    assert event_reason(reason, "zh-CN") == expected


def test_english_and_unknown_reasons_unchanged() -> None:
    assert event_reason("picked up by worker", "en") == "picked up by worker"
    assert event_reason("something the table does not know", "zh-CN") == "something the table does not know"
