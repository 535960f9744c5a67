"""The dashboard's message catalogue in English and Simplified Chinese.

DICOM names (CE-T1, SEG, SR, AE title, UID) stay untranslated in both
languages, because administrators look them up in conformance statements
and PACS screens under those names.
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "otscc_lang"

ENGLISH: dict[str, str] = {
    "app.title": "OTSCC node",
    "nav.jobs": "Studies and jobs",
    "nav.logout": "Log out",
    "nav.signed_in_as": "Signed in as {user}",
    "nav.local_admin": "Local administrator (no login on this loopback address)",
    "nav.language": "Language",
    "patient.show": "Show patient data",
    "patient.hide": "Hide patient data",
    "login.title": "Log in",
    "login.username": "User name",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.failed": "Invalid user name or password.",
    "login.required": "Log in to see the dashboard.",
    "filter.state": "State",
    "filter.any_state": "any",
    "filter.from": "Created from",
    "filter.to": "Created to",
    "filter.ae": "Calling AE title",
    "filter.page_size": "Per page",
    "filter.apply": "Filter",
    "filter.clear": "Clear",
    "list.job": "Job",
    "list.study": "Study",
    "list.patient": "Patient",
    "list.state": "State",
    "list.arrived": "Arrived (UTC)",
    "list.calling_ae": "Calling AE",
    "list.roles": "Series roles",
    "list.duration": "Duration",
    "list.deliveries": "Deliveries",
    "list.empty": "No jobs match these filters.",
    "list.page": "Page {page}",
    "list.previous": "Previous",
    "list.next": "Next",
    "list.total": "{total} jobs",
    "study.title": "Study {uid}",
    "study.patient_name": "Patient name",
    "study.patient_id": "Patient ID",
    "study.accession": "Accession number",
    "study.date": "Study date",
    "study.description": "Description",
    "study.state": "Assembly state",
    "study.instances": "Instances",
    "study.first_received": "First instance",
    "study.last_received": "Last instance",
    "study.series": "Series",
    "study.thumbnail": "CE-T1 slice with the largest tumour area and its contour",
    "study.thumbnail_alt": "CE-T1 thumbnail",
    "study.jobs": "Jobs",
    "series.number": "No.",
    "series.description": "Description",
    "series.modality": "Modality",
    "series.instances": "Instances",
    "series.role": "Role",
    "series.evidence": "Evidence",
    "series.uid": "Series Instance UID",
    "series.no_role": "none",
    "job.heading": "Job {id} (run {run})",
    "job.state": "State",
    "job.created": "Created",
    "job.started": "Started",
    "job.finished": "Finished",
    "job.duration": "Duration",
    "job.attempts": "Attempts",
    "job.error": "Error",
    "job.hint": "What to do",
    "job.reason_code": "Reason code",
    "job.timeline": "Timeline",
    "job.outputs": "Outputs",
    "job.deliveries": "Deliveries",
    "job.no_outputs": "No outputs.",
    "job.no_deliveries": "No deliveries.",
    "event.at": "Time (UTC)",
    "event.change": "Change",
    "event.reason": "Reason",
    "event.actor": "By",
    "event.after": "After",
    "output.kind": "Kind",
    "output.sop_class": "SOP Class UID",
    "output.sop_instance": "SOP Instance UID",
    "output.series": "Series Instance UID",
    "delivery.destination": "Destination",
    "delivery.ae": "AE title",
    "delivery.state": "State",
    "delivery.attempts": "Attempts",
    "delivery.next": "Next attempt",
    "delivery.last_error": "Last error",
    "delivery.attempt_log": "Attempts",
    "attempt.outcome": "Outcome",
    "attempt.status": "DIMSE status",
    "attempt.message": "Message",
    "attempt.duration": "Duration",
    "action.retry_job": "Retry job",
    "action.cancel_job": "Cancel job",
    "action.retry_delivery": "Retry delivery",
    "action.force_complete": "Force complete",
    "action.done.retry_job": "Job {id} is queued again.",
    "action.done.cancel_job": "Job {id} is cancelled.",
    "action.done.retry_delivery": "Delivery {id} will be sent again.",
    "action.done.force_complete": "Study {id} was evaluated now, as if its force-complete timeout had expired.",
    "action.failed": "The action failed: {detail}",
    "error.not_found": "Not found.",
    "error.csrf": "The form has expired or did not come from this dashboard. Reload the page and try again.",
    "error.forbidden": "Forbidden.",
    "state.waiting": "waiting",
    "state.queued": "queued",
    "state.running": "running",
    "state.delivering": "delivering",
    "state.done": "done",
    "state.failed_input": "failed (input)",
    "state.failed": "failed",
    "state.delivery_failed": "delivery failed",
    "state.cancelled": "cancelled",
    "state.superseded": "superseded",
    "state.receiving": "receiving",
    "state.complete": "complete",
    "state.incomplete": "incomplete",
    "state.pending": "pending",
    "state.in_progress": "in progress",
    "state.retry_wait": "waiting to retry",
    "state.delivered": "delivered",
    "hint.missing_role": "Send the missing series again, then retry the job.",
    "hint.slice_gap": "Send the complete series again, then retry the job.",
    "hint.internal_error": "See the node log for the traceback; retry the job once the cause is fixed.",
}

CHINESE: dict[str, str] = {
    "app.title": "OTSCC 节点",
    "nav.jobs": "检查与任务",
    "nav.logout": "退出登录",
    "nav.signed_in_as": "当前用户：{user}",
    "nav.local_admin": "本机管理员（回环地址无需登录）",
    "nav.language": "语言",
    "patient.show": "显示患者信息",
    "patient.hide": "隐藏患者信息",
    "login.title": "登录",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.failed": "用户名或密码错误。",
    "login.required": "请登录后查看控制台。",
    "filter.state": "状态",
    "filter.any_state": "全部",
    "filter.from": "创建起始日期",
    "filter.to": "创建截止日期",
    "filter.ae": "调用方 AE title",
    "filter.page_size": "每页",
    "filter.apply": "筛选",
    "filter.clear": "清除",
    "list.job": "任务",
    "list.study": "检查",
    "list.patient": "患者",
    "list.state": "状态",
    "list.arrived": "到达时间 (UTC)",
    "list.calling_ae": "调用方 AE",
    "list.roles": "序列角色",
    "list.duration": "耗时",
    "list.deliveries": "发送",
    "list.empty": "没有符合筛选条件的任务。",
    "list.page": "第 {page} 页",
    "list.previous": "上一页",
    "list.next": "下一页",
    "list.total": "共 {total} 个任务",
    "study.title": "检查 {uid}",
    "study.patient_name": "患者姓名",
    "study.patient_id": "患者 ID",
    "study.accession": "检查号",
    "study.date": "检查日期",
    "study.description": "描述",
    "study.state": "接收状态",
    "study.instances": "实例数",
    "study.first_received": "首个实例",
    "study.last_received": "最后实例",
    "study.series": "序列",
    "study.thumbnail": "肿瘤面积最大的 CE-T1 层面及其轮廓",
    "study.thumbnail_alt": "CE-T1 缩略图",
    "study.jobs": "任务",
    "series.number": "序号",
    "series.description": "描述",
    "series.modality": "模态",
    "series.instances": "实例数",
    "series.role": "角色",
    "series.evidence": "依据",
    "series.uid": "Series Instance UID",
    "series.no_role": "无",
    "job.heading": "任务 {id}（第 {run} 次运行）",
    "job.state": "状态",
    "job.created": "创建时间",
    "job.started": "开始时间",
    "job.finished": "结束时间",
    "job.duration": "耗时",
    "job.attempts": "尝试次数",
    "job.error": "错误",
    "job.hint": "处理建议",
    "job.reason_code": "原因代码",
    "job.timeline": "时间线",
    "job.outputs": "输出",
    "job.deliveries": "发送",
    "job.no_outputs": "没有输出。",
    "job.no_deliveries": "没有发送记录。",
    "event.at": "时间 (UTC)",
    "event.change": "变化",
    "event.reason": "原因",
    "event.actor": "操作者",
    "event.after": "间隔",
    "output.kind": "类型",
    "output.sop_class": "SOP Class UID",
    "output.sop_instance": "SOP Instance UID",
    "output.series": "Series Instance UID",
    "delivery.destination": "目的地",
    "delivery.ae": "AE title",
    "delivery.state": "状态",
    "delivery.attempts": "尝试次数",
    "delivery.next": "下次尝试",
    "delivery.last_error": "最近错误",
    "delivery.attempt_log": "尝试记录",
    "attempt.outcome": "结果",
    "attempt.status": "DIMSE 状态",
    "attempt.message": "信息",
    "attempt.duration": "耗时",
    "action.retry_job": "重试任务",
    "action.cancel_job": "取消任务",
    "action.retry_delivery": "重新发送",
    "action.force_complete": "强制完成",
    "action.done.retry_job": "任务 {id} 已重新排队。",
    "action.done.cancel_job": "任务 {id} 已取消。",
    "action.done.retry_delivery": "发送 {id} 将重新进行。",
    "action.done.force_complete": "已立即评估检查 {id}，如同强制完成的超时已到。",
    "action.failed": "操作失败：{detail}",
    "error.not_found": "未找到。",
    "error.csrf": "表单已过期或并非来自本控制台。请刷新页面后重试。",
    "error.forbidden": "禁止访问。",
    "state.waiting": "等待中",
    "state.queued": "排队中",
    "state.running": "运行中",
    "state.delivering": "发送中",
    "state.done": "已完成",
    "state.failed_input": "失败（输入）",
    "state.failed": "失败",
    "state.delivery_failed": "发送失败",
    "state.cancelled": "已取消",
    "state.superseded": "已被取代",
    "state.receiving": "接收中",
    "state.complete": "完整",
    "state.incomplete": "不完整",
    "state.pending": "待发送",
    "state.in_progress": "发送中",
    "state.retry_wait": "等待重试",
    "state.delivered": "已送达",
    "hint.missing_role": "请重新发送缺失的序列，然后重试该任务。",
    "hint.slice_gap": "请重新发送完整的序列，然后重试该任务。",
    "hint.internal_error": "请查看节点日志中的错误堆栈；排除原因后重试该任务。",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": ENGLISH, "zh-CN": CHINESE}
LANGUAGE_NAMES = {"en": "English", "zh-CN": "中文"}


def normalise_language(tag: str | None) -> str | None:
    """Map a language tag (``zh``, ``zh-Hans-CN``, ``en-GB``) to a catalogue, or None."""
    if not tag:
        return None
    tag = tag.strip().lower().replace("_", "-")
    if tag.startswith("zh"):
        # Traditional Chinese readers are better served by English than by
        # simplified characters they may not read fluently.
        if "hant" in tag or tag in ("zh-tw", "zh-hk", "zh-mo"):
            return None
        return "zh-CN"
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def language_from_accept(header: str | None) -> str:
    """Choose a catalogue from an Accept-Language header (RFC 9110 section 12.5.4)."""
    if not header:
        return DEFAULT_LANGUAGE
    weighted = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        weighted.append((-quality, position, tag))
    for negative_quality, _, tag in sorted(weighted):
        language = normalise_language(tag)
        if language is not None and negative_quality < 0:
            return language
    return DEFAULT_LANGUAGE


def translator(language: str) -> Callable[..., str]:
    """Return ``t(key, **values)`` for ``language``, falling back to English, then to the key."""
    catalogue = CATALOGUES.get(language, ENGLISH)

    def translate(key: str, **values: object) -> str:
        text = catalogue.get(key) or ENGLISH.get(key) or key
        return text.format(**values) if values else text

    return translate


def has_message(key: str) -> bool:
    """Return whether the English catalogue has ``key``."""
    return key in ENGLISH
