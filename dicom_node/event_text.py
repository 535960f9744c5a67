"""Job event reasons in the reader's language.

The node stores each job event's reason in English, because logs, the
database and bug reports share one text. This module renders a stored
reason in Simplified Chinese for the dashboard and ``otscc-node demo``: it
matches the sentence the node wrote and fills its Chinese form with the
same values. Values inside a reason stay as they are: destination and AE
names, series descriptions, DICOM role names (CE-T1, T2, T1), and the
messages of peers and of the pipeline, which come from outside this table.
Job states inside a reason take the dashboard's Chinese state names. A
reason that matches no pattern is shown unchanged.
"""

from __future__ import annotations

import re

_DESTINATION = r"(?P<destination>.+?)"

# Each pattern matches one sentence that dicom_node writes as an event
# reason; the groups are filled into the Chinese template. A group named
# ``nested`` is itself a reason and is rendered in turn.
_CHINESE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), template)
    for pattern, template in (
        (r"first instance received", "收到第一个实例"),
        (r"new instances after job (?P<job>\d+); a new run will supersede it", "任务 {job} 之后收到新实例，新的运行将取代它"),
        (r"picked up by worker", "工作进程已开始处理"),
        (r"node restarted while the job was running; queued again", "任务运行期间节点重启，已重新排队"),
        (rf"node restarted during delivery to {_DESTINATION}; sending again", "向 {destination} 发送期间节点重启，重新发送"),
        (r"(?P<count>\d+) pending deliveries cancelled: (?P<nested>.*)", "已取消 {count} 项待完成的发送：{nested}"),
        (r"superseded by job (?P<job>\d+) \(run (?P<run>\d+)\)", "已被任务 {job}（第 {run} 次运行）取代"),
        (r"job (?P<job>\d+) finished a newer run while this one was still running", "较新的运行（任务 {job}）已在本任务仍在运行时完成"),
        (r"delivery failed for (?P<destinations>.+)", "发送失败：{destinations}"),
        (r"results delivered to every destination", "结果已发送到所有目的地"),
        (rf"delivery to {_DESTINATION} cancelled: job is (?P<state>\w+)", "已取消向 {destination} 的发送：任务状态为 {state}"),
        (rf"delivery to {_DESTINATION} failed: (?P<message>.*); permanent, not retried", "发送到 {destination} 失败：{message}；永久性错误，不再重试"),
        (rf"delivery to {_DESTINATION} failed: (?P<message>.*); gave up after (?P<count>\d+) attempts", "发送到 {destination} 失败：{message}；尝试 {count} 次后放弃"),
        (rf"delivery to {_DESTINATION} failed: (?P<message>.*); retrying in (?P<seconds>[0-9.e+]+) s", "发送到 {destination} 失败：{message}；{seconds} 秒后重试"),
        (rf"delivery to {_DESTINATION} retried by (?P<actor>.+)", "{actor} 重新发送到 {destination}"),
        (rf"delivered to {_DESTINATION}: (?P<message>.*)", "已发送到 {destination}：{message}"),
        (r"failure report queued for (?P<destinations>.+)", "失败报告已排队，将发送到 {destinations}"),
        (r"results discarded because the job became (?P<state>\w+) while it ran", "结果已丢弃：任务在运行期间变为 {state}"),
        (r"pipeline failed: (?P<message>.*)", "处理流程失败：{message}"),
        (r"input cannot be processed: (?P<message>.*)", "输入无法处理：{message}"),
        (r"(?P<count>\d+) object\(s\) written; sending to (?P<destinations>.+)", "已生成 {count} 个对象，正在发送到 {destinations}"),
        (r"(?P<count>\d+) object\(s\) written; no destinations configured", "已生成 {count} 个对象，未配置发送目的地"),
        (r"force-complete requested by (?P<actor>.+?): (?P<nested>.*)", "{actor} 要求强制完成：{nested}"),
        (
            r"study complete after (?P<seconds>[0-9.]+) s without new instances: (?P<chosen>.*)",
            "检查已完整（{seconds} 秒内没有新实例）：{chosen}",
        ),
        (
            r"study not complete yet: (?P<nested>.*); waiting up to (?P<seconds>[0-9]+) s after the last instance",
            "检查尚不完整：{nested}；最后一个实例之后最多等待 {seconds} 秒",
        ),
        (
            r"Required series (?P<roles>.+?) not received within (?P<seconds>[0-9]+) s of the last instance: (?P<message>.*)",
            "在最后一个实例之后 {seconds} 秒内未收到所需序列 {roles}：{message}",
        ),
        (r"(?P<role>CE-T1|T2|T1) missing(?P<rest>(; .*)?)", "缺少 {role}{rest}"),
        (r"Series (?P<series>.+?): (?P<message>.*)", "序列 {series}：{message}"),
        (
            r"series roles of the study could not be evaluated: (?P<message>.*)",
            "无法判定本检查各序列的角色：{message}",
        ),
        (r"retry requested by (?P<actor>.+)", "{actor} 请求重新处理"),
        (r"cancelled by (?P<actor>.+)", "已被 {actor} 取消"),
    )
)

_TRANSLATORS = {"zh-CN": _CHINESE}


def _state_name(state: str, language: str) -> str:
    # Imported here: the dashboard package imports this module when it loads.
    from dicom_node.dashboard.i18n import CATALOGUES

    return CATALOGUES.get(language, {}).get(f"state.{state}", state)


def event_reason(reason: str, language: str) -> str:
    """Return the stored job event ``reason`` in ``language``, or unchanged where no form is known.

    ``language`` is a dashboard language tag (``"en"`` or ``"zh-CN"``).
    """
    patterns = _TRANSLATORS.get(language)
    if not patterns:
        return reason
    for pattern, template in patterns:
        match = pattern.fullmatch(reason)
        if match is None:
            continue
        values = {name: value or "" for name, value in match.groupdict().items()}
        if "state" in values:
            values["state"] = _state_name(values["state"], language)
        if "nested" in values:
            values["nested"] = event_reason(values["nested"], language)
        if values.get("rest"):
            values["rest"] = "；" + event_reason(values["rest"][2:], language)
        return template.format(**values)
    return reason
