"""``otscc-node demo``: send a synthetic phantom study to a running node and show what it made.

The command plays the PACS for a newcomer: it writes a phantom tongue MR
study (CE-T1, T2 and T1, labelled synthetic in every header), sends it to
the node over C-STORE, waits for the job, then prints the job's timeline,
the objects made and where they went, and the predicted probability. It
reads the job from the node's own database, so it needs the node's config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import locale
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import DestinationSettings, Settings
from db.models import Job, Study
from db.session import create_db_engine, make_session_factory
from db.states import DeliveryState, JobState
from dicom_node.event_text import event_reason

if TYPE_CHECKING:
    from training.phantom import PhantomStudy

DEMO_CALLING_AE = "OTSCC_DEMO"
POLL_INTERVAL_S = 0.5
TRIED_DELIVERY_STATES = frozenset(
    {DeliveryState.DELIVERED, DeliveryState.RETRY_WAIT, DeliveryState.FAILED, DeliveryState.CANCELLED}
)

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "writing": "Writing a synthetic phantom study ({vendor}, seed {seed}) to {folder}",
        "sending": "Sending {count} instances to {ae} at {host}:{port} as {calling}",
        "send_failed": "Sending failed: {message}. Is the node running? Start it with scripts/bootstrap.sh",
        "waiting": "Waiting for job of study {uid} (up to {timeout:.0f} s)",
        "timed_out": "No final job state within {timeout:.0f} s; the job is {state}. See the dashboard or 'otscc-node jobs'",
        "timeline": "Job {job} timeline",
        "outputs": "Objects made",
        "deliveries": "Deliveries",
        "no_destinations": "None for this job.",
        "retrying": "The results wait in the outbox and are sent when this destination accepts them.",
        "result": "Result",
        "probability": "Probability of cervical lymph node metastasis: {probability:.1%} ({risk} risk at the model's cutoff)",
        "no_probability": "No probability: missing inputs {why}",
        "no_nomogram": "No probability: no nomogram model is configured.",
        "tumour": "Tumour volume {volume:.0f} mm3, maximum diameter {diameter:.1f} mm",
        "no_tumour": "No tumour was found.",
        "demo_label": "DEMO MODEL trained on synthetic phantoms - not for clinical use.",
        "models": "Models: {models}",
        "failed": "The job ended {state}: {message}",
    },
    "zh-CN": {
        "writing": "正在生成合成体模检查（{vendor}，种子 {seed}），写入 {folder}",
        "sending": "正在发送 {count} 个实例到 {ae}（{host}:{port}），本端 AE 为 {calling}",
        "send_failed": "发送失败：{message}。节点是否在运行？请用 scripts/bootstrap.sh 启动",
        "waiting": "正在等待检查 {uid} 的任务（最长 {timeout:.0f} 秒）",
        "timed_out": "{timeout:.0f} 秒内任务未结束，当前状态为 {state}。请查看仪表盘或运行 'otscc-node jobs'",
        "timeline": "任务 {job} 时间线",
        "outputs": "生成的对象",
        "deliveries": "发送记录",
        "no_destinations": "此任务无发送记录。",
        "retrying": "结果保存在发件箱中，目标节点可用时会自动发送。",
        "result": "结果",
        "probability": "颈部淋巴结转移概率：{probability:.1%}（按模型阈值为{risk}风险）",
        "no_probability": "无概率结果：缺少输入 {why}",
        "no_nomogram": "无概率结果：未配置列线图模型。",
        "tumour": "肿瘤体积 {volume:.0f} mm3，最大径 {diameter:.1f} mm",
        "no_tumour": "未发现肿瘤。",
        "demo_label": "演示模型，由合成体模训练，不可用于临床。",
        "models": "模型：{models}",
        "failed": "任务以 {state} 结束：{message}",
    },
}

RISK_WORDS = {"en": {"high": "high", "low": "low"}, "zh-CN": {"high": "高", "low": "低"}}


def default_language() -> str:
    """Return ``zh-CN`` where the locale is Chinese, else ``en``."""
    tag = os.environ.get("LANG") or (locale.getlocale()[0] or "")
    return "zh-CN" if tag.lower().startswith("zh") else "en"


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``otscc-node demo`` to the command line."""
    demo = subparsers.add_parser("demo", help="send a synthetic phantom study to the running node and show the result")
    demo.add_argument("--config", "-c", type=Path, help="the node's TOML settings file (default: $OTSCC_CONFIG, else built-in defaults)")
    demo.add_argument("--database-url", help="the node's database URL, if not the one in the settings")
    demo.add_argument("--host", default="127.0.0.1", help="host of the node (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port of the node (default: node.port setting, 11112)")
    demo.add_argument("--aetitle", "-aet", default=DEMO_CALLING_AE, help=f"calling AE title (default {DEMO_CALLING_AE})")
    demo.add_argument("--vendor", choices=("siemens", "ge", "philips"), default="siemens", help="header style of the phantom")
    demo.add_argument("--chinese", action="store_true", help="write GB18030 headers with a Chinese name and descriptions")
    demo.add_argument(
        "--seed", type=int, help="phantom seed; the same seed gives the same study, which the node then stores only once (default: a new seed each run)"
    )
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job (default 300)")
    demo.add_argument("--lang", choices=tuple(MESSAGES), default=default_language(), help="language of the output")
    demo.set_defaults(func=run_demo)
    return demo


def run_demo(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Run the demo; return 0 when the job finished, 1 when it failed or timed out."""
    text = _translator(args.lang)
    # NOTE: the node's packages do not import training/. The demo is a
    # client that plays the PACS, not part of a study's path through the
    # node, so it borrows the phantom generator here and nowhere else.
    from training.phantom import make_study

    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    with tempfile.TemporaryDirectory(prefix="otscc-demo-") as folder:
        print(text("writing", vendor=args.vendor, seed=seed, folder=folder), file=out)
        phantom = make_study(Path(folder), seed=seed, vendor=args.vendor, chinese=args.chinese)
        files = [path for paths in phantom.files.values() for path in paths]
        status = _send_and_report(args, settings, phantom, files, text, out)
    return status


def _send_and_report(
    args: argparse.Namespace,
    settings: Settings,
    phantom: "PhantomStudy",
    files: list[Path],
    text: Callable[..., str],
    out: TextIO,
) -> int:
    node = DestinationSettings(
        name="node", ae_title=settings.node.ae_title, host=args.host, port=args.port or settings.node.port
    )
    print(text("sending", count=len(files), ae=node.ae_title, host=node.host, port=node.port, calling=args.aetitle), file=out)
    from dicom_node.sender import SendOutcome, send_datasets

    report = send_datasets(node, files, calling_ae=args.aetitle)
    if report.outcome is not SendOutcome.DELIVERED:
        print(text("send_failed", message=report.message), file=out)
        return 1

    engine = create_db_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        print(text("waiting", uid=phantom.study_instance_uid, timeout=args.timeout), file=out)
        job_id = _wait_for_job(factory, phantom.study_instance_uid, args.timeout)
        with factory() as session:
            job = session.get(Job, job_id) if job_id is not None else None
            if job is None or not _settled(job):
                state = "not created" if job is None else job.state.value
                print(text("timed_out", timeout=args.timeout, state=state), file=out)
                return 1
            _print_job(job, text, args.lang, out)
            return 0 if job.state in (JobState.DONE, JobState.DELIVERING, JobState.DELIVERY_FAILED) else 1
    finally:
        engine.dispose()


def _translator(language: str) -> Callable[..., str]:
    catalogue = MESSAGES.get(language, MESSAGES["en"])

    def translate(key: str, **values: object) -> str:
        return catalogue[key].format(**values)

    return translate


def _settled(job: Job) -> bool:
    # A job counts as settled for the demo when it is final, or when its
    # results are made and every destination was tried at least once, so a
    # PACS that is not running does not keep the newcomer waiting.
    if job.state.is_final:
        return True
    if job.state is not JobState.DELIVERING:
        return False
    return all(delivery.state in TRIED_DELIVERY_STATES for delivery in job.deliveries)


def _wait_for_job(factory: sessionmaker[Session], study_uid: str, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    job_id = None
    while time.monotonic() < deadline:
        with factory() as session:
            study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()
            job = None if study is None or not study.jobs else study.jobs[-1]
            if job is not None:
                job_id = job.id
                if _settled(job):
                    return job_id
        time.sleep(POLL_INTERVAL_S)
    return job_id


def _print_job(job: Job, text: Callable[..., str], language: str, out: TextIO) -> None:
    print(f"\n{text('timeline', job=job.id)}", file=out)
    start = job.events[0].at if job.events else job.created_at
    for event in job.events:
        offset = (_aware(event.at) - _aware(start)).total_seconds()
        change = f"{event.from_state or '-'} -> {event.to_state}" if event.to_state else "event"
        print(f"  +{offset:7.2f} s  {change:<28} {event_reason(event.reason, language)}", file=out)

    print(f"\n{text('outputs')}", file=out)
    for output in job.outputs:
        print(f"  {output.kind.value:<18} {output.sop_instance_uid}  {output.path}", file=out)

    print(f"\n{text('deliveries')}", file=out)
    if not job.deliveries:
        print(f"  {text('no_destinations')}", file=out)
    for delivery in job.deliveries:
        error = f" ({delivery.last_error})" if delivery.last_error else ""
        print(
            f"  {delivery.destination}: {delivery.ae_title}@{delivery.host}:{delivery.port} "
            f"{delivery.state.value}, {delivery.attempts} attempt(s){error}",
            file=out,
        )
        if delivery.state is DeliveryState.RETRY_WAIT:
            print(f"    {text('retrying')}", file=out)

    print(f"\n{text('result')}", file=out)
    _print_result(job, text, language, out)


def _print_result(job: Job, text: Callable[..., str], language: str, out: TextIO) -> None:
    summary = job.result_summary or {}
    if job.state in (JobState.FAILED, JobState.FAILED_INPUT, JobState.CANCELLED):
        print(f"  {text('failed', state=job.state.value, message=job.error_message or '')}", file=out)
        return
    if summary.get("tumour_found"):
        print(f"  {text('tumour', volume=summary['volume_mm3'], diameter=summary['max_diameter_mm'])}", file=out)
    else:
        print(f"  {text('no_tumour')}", file=out)

    probability = summary.get("probability")
    if probability is not None:
        risk = RISK_WORDS[language].get(summary.get("risk_group") or "", summary.get("risk_group") or "?")
        print(f"  {text('probability', probability=probability, risk=risk)}", file=out)
    elif summary.get("missing_inputs"):
        print(f"  {text('no_probability', why=', '.join(summary['missing_inputs']))}", file=out)
    elif summary.get("tumour_found"):
        print(f"  {text('no_nomogram')}", file=out)
    print(f"  {text('models', models=', '.join(summary.get('models') or []))}", file=out)
    if summary.get("is_demo"):
        print(f"  {text('demo_label')}", file=out)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
