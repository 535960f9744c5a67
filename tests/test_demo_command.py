"""``otscc-node demo`` sends a phantom to a running node and prints the job's result."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
from pathlib import Path

import pytest

from config.settings import load_settings
from db.models import Job, JobEvent
from db.states import JobState
from dicom_node.app import Node
from dicom_node.demo import _print_job, _translator, run_demo
from dicom_node.study_pipeline import StudyPipeline
from inference.model_package import write_package
from tests.conftest import free_port
from tests.inference_helpers import threshold_model


@pytest.fixture
def demo_settings(tmp_path: Path):
    loaded = threshold_model(["ce_t1", "t2", "t1"], input_size=64, background_bias=2.0)
    manifest = dataclasses.replace(loaded.manifest, name="threshold-demo-test", version="2.0.0")
    package = write_package(loaded.model, tmp_path / "model", manifest)
    settings = load_settings(
        environ={},
        overrides={
            "node": {"port": free_port(), "bind_address": "127.0.0.1"},
            "storage": {"data_dir": str(tmp_path / "var"), "min_free_mb": 1},
            "assembly": {"quiet_period_s": 0.5, "check_interval_s": 0.2},
            "inference": {"segmentation_model": str(package), "nomogram_model": ""},
            "dashboard": {"enabled": False},
        },
    )
    return settings


@pytest.fixture
def running_node(demo_settings):
    node = Node(demo_settings, pipeline_step=StudyPipeline(demo_settings))
    node.start()
    yield demo_settings
    node.stop()


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        host="127.0.0.1", port=None, aetitle="OTSCC_DEMO", vendor="ge", chinese=False,
        seed=5, timeout=120.0, lang="en",
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_demo_prints_timeline_and_result(running_node) -> None:
    out = io.StringIO()

    status = run_demo(_args(), running_node, out=out)

    text = out.getvalue()
    assert status == 0, text
    assert "waiting -> queued" in text
    assert "queued -> running" in text
    assert "running -> done" in text
    assert "seg " in text
    assert "sr " in text
    assert "Tumour volume" in text
    assert "no nomogram model is configured" in text
    assert "DEMO MODEL trained on synthetic phantoms" in text


def test_demo_reports_unreachable_node(demo_settings) -> None:
    out = io.StringIO()

    status = run_demo(_args(port=free_port(), lang="zh-CN"), demo_settings, out=out)

    assert status == 1
    assert "发送失败" in out.getvalue()


def test_demo_timeline_in_chinese() -> None:
    start = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.timezone.utc)
    job = Job(state=JobState.DONE, result_summary={}, created_at=start)
    job.events = [
        JobEvent(at=start, from_state=None, to_state="waiting", reason="first instance received"),
        JobEvent(at=start + dt.timedelta(seconds=12), from_state="queued", to_state="running", reason="picked up by worker"),
    ]
    out = io.StringIO()

    _print_job(job, _translator("zh-CN"), "zh-CN", out)

    assert "收到第一个实例" in out.getvalue()
    assert "工作进程已开始处理" in out.getvalue()
    assert "picked up by worker" not in out.getvalue()
