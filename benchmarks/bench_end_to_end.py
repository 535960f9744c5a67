"""End-to-end latency of the node, from the last instance received to the SEG and SR stored in the PACS.

Usage::

    .venv/bin/python benchmarks/bench_end_to_end.py [--studies 3] [--size 512] [--slices 24] [--write-docs]

Orthanc plays the PACS. It stores each phantom study (CE-T1, T2 and T1 of
``--slices`` slices of ``--size`` x ``--size`` pixels) and forwards it to
``otscc-node serve`` with ``POST /modalities/node/store``. The node runs in
Orthanc's network namespace with its default settings (quiet period 10 s,
fsync on, one worker) and a clinical CSV for the nomogram, and sends its
results back to Orthanc's DICOM port.
The studies go one after another, each after the previous one is done, and
the first is sent only after the node has loaded its segmentation model.

Every time comes from the node's database: the last instance's
``received_at``, the job's ``queued_at`` and ``started_at``, the stage
durations in ``result_summary``, the delivery attempt's duration and the
delivery's ``delivered_at``. Orthanc stores an instance before it sends the
C-STORE response, so ``delivered_at`` is when the results were in the PACS.
The script then checks that Orthanc has stored the SEG and the SR.

The node's peak resident memory is the sum of the ``VmHWM`` in ``/proc`` of
its process and its children, the pipeline worker among them: once after the
model is loaded, and again after each job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from inference.result import SequenceRole  # noqa: E402
from tests.acceptance_helpers import (  # noqa: E402
    NODE_AE,
    Destination,
    ModelFiles,
    NodeDatabase,
    NodeProcess,
    orthanc_series_by_modality,
    orthanc_study_id,
    orthanc_upload,
    shipped_demo_models,
    threshold_models,
    wait_for_job_state,
    write_clinical_csv,
    write_node_config,
)
from tests.peers import free_ports, start_orthanc, wait_until  # noqa: E402
from training.phantom import make_study  # noqa: E402

DOCS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
LATENCY_HEADING = "## End-to-end latency"
MEMORY_HEADING = "## Node peak memory during a job"
STAGES = ("load", "align", "segment", "radiomics", "nomogram", "write")
DEFAULT_QUIET_PERIOD_S = 10.0
DEFAULT_FORCE_COMPLETE_S = 900.0
TARGET_S = 45.0
JOB_TIMEOUT_S = 600.0
MODEL_LOAD_TIMEOUT_S = 180.0

# Written by hand, so they are not regenerated with the figures. Reread
# them after a change to completion, the pipeline or the outbox.
READING_NOTES = [
    "Reading the table:",
    "",
    "- The completion wait is the quiet period (10 s) plus up to one check interval",
    "  (1 s), and it is most of the total. A shorter `assembly.quiet_period_s`",
    "  lowers the total by the same amount.",
    "- The write stage builds the SEG and SR and validates each one with the",
    "  validators installed (dciodvfy, dsrdump for the SR, and a read-back).",
    "- The demo nomogram uses the T category and depth of invasion and imputes",
    "  neither. Without a clinical source that provides them, the SR carries no",
    "  probability.",
    "",
]


@dataclass(frozen=True)
class StudyTiming:
    """Durations of the parts of one study's end-to-end latency, in seconds."""

    forward_s: float
    completion_wait_s: float
    queue_wait_s: float
    stage_seconds: dict[str, float]
    delivery_s: float
    total_s: float
    peak_rss_mib: float

    @property
    def pipeline_s(self) -> float:
        """Sum of the pipeline stages."""
        return sum(self.stage_seconds.values())

    @property
    def other_s(self) -> float:
        """Time not in any measured part: storing the outputs, the outbox's poll wait, commits."""
        return self.total_s - self.completion_wait_s - self.queue_wait_s - self.pipeline_s - self.delivery_s


def _seconds(later: dt.datetime, earlier: dt.datetime) -> float:
    return (later - earlier).total_seconds()


def _wait_for_model(node: NodeProcess) -> None:
    def loaded() -> bool:
        log = node.log_path.read_text(errors="replace")
        if "segmentation model cannot be loaded" in log:
            raise RuntimeError(f"the node cannot load its model: {node.log_tail()}")
        return " loaded in " in log

    wait_until(loaded, MODEL_LOAD_TIMEOUT_S, "the node to load its segmentation model", 0.5)


def measure_study(orthanc, node: NodeProcess, database: NodeDatabase, folder: Path, seed: int, size: int, slices: int) -> StudyTiming:
    """Send one phantom study through Orthanc to the node and return its timing."""
    phantom = make_study(folder / f"study-{seed}", seed=seed, rows=size, columns=size, slices=slices)
    write_clinical_csv(folder / "clinical.csv", [phantom])
    orthanc_upload(orthanc, [path for role in SequenceRole for path in phantom.files[role]])
    study_id = orthanc_study_id(orthanc, phantom.study_instance_uid)

    started = time.monotonic()
    orthanc.rest_post("/modalities/node/store", [study_id], timeout_s=JOB_TIMEOUT_S)
    forward_s = time.monotonic() - started
    job = wait_for_job_state(database, phantom.study_instance_uid, ["done"], JOB_TIMEOUT_S, node)

    stored = orthanc_series_by_modality(orthanc, study_id)
    if not stored.get("SEG") or not stored.get("SR"):
        raise RuntimeError(f"job {job.id} is done but the SEG or SR of study {phantom.study_instance_uid} is missing in Orthanc")
    if job.result_summary.get("probability") is None:
        print(f"job {job.id} reported no probability; missing inputs {job.result_summary.get('missing_inputs')}", file=sys.stderr)
    last_received = database.last_received_at(phantom.study_instance_uid)
    delivered = database.delivered_at(job.id)
    attempts = database.delivery_attempts(job.id)
    stage_seconds = {stage: float(job.result_summary.get("stage_seconds", {}).get(stage, 0.0)) for stage in STAGES}
    return StudyTiming(
        forward_s=forward_s,
        completion_wait_s=_seconds(job.queued_at, last_received),
        queue_wait_s=_seconds(job.started_at, job.queued_at),
        stage_seconds=stage_seconds,
        delivery_s=sum(duration or 0.0 for _, duration in attempts),
        total_s=_seconds(delivered, last_received),
        peak_rss_mib=node.peak_rss_kib() / 1024.0,
    )


def run(studies: int, size: int, slices: int, models: ModelFiles) -> tuple[list[StudyTiming], float]:
    """Measure ``studies`` studies on one node, and return their timings and the peak memory after model load."""
    with tempfile.TemporaryDirectory(prefix="otscc-e2e-") as work:
        folder = Path(work)
        (node_port,) = free_ports(1)
        with start_orthanc(folder, modalities={"node": (NODE_AE, "127.0.0.1", node_port)}) as orthanc:
            config = write_node_config(
                folder,
                port=node_port,
                models=models,
                destinations=[Destination("pacs", orthanc.ae_title, orthanc.dicom_port)],
                quiet_period_s=DEFAULT_QUIET_PERIOD_S,
                force_complete_s=DEFAULT_FORCE_COMPLETE_S,
                test_timings=False,
                clinical_csv=folder / "clinical.csv",
            )
            node = NodeProcess(config, node_port, folder / "node.log", prefix=orthanc.namespace_prefix)
            node.start()
            database = NodeDatabase(folder / "data" / "otscc-node.db")
            try:
                _wait_for_model(node)
                loaded_mib = node.peak_rss_kib() / 1024.0
                timings = [measure_study(orthanc, node, database, folder, 7000 + index, size, slices) for index in range(studies)]
            finally:
                database.close()
                node.stop()
    return timings, loaded_mib


def machine_description() -> str:
    """Return the CPU model, core count and kernel of this machine."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores, no GPU, Linux {platform.release()}, Python {platform.python_version()}"


def _row(label: str, values: Sequence[float]) -> str:
    cells = " | ".join(f"{value:.1f}" for value in values)
    return f"| {label} | {cells} | {statistics.median(values):.1f} |"


def latency_section(timings: list[StudyTiming], command: str, models: ModelFiles, size: int, slices: int, loads: tuple[float, float]) -> str:
    """Return the markdown of the latency section."""
    header = " | ".join(f"study {index + 1}" for index in range(len(timings)))
    rows = [
        _row("completion wait (queued_at - last instance)", [t.completion_wait_s for t in timings]),
        _row("queue wait (started_at - queued_at)", [t.queue_wait_s for t in timings]),
        *[_row(f"stage {stage}", [t.stage_seconds[stage] for t in timings]) for stage in STAGES],
        _row("pipeline stages, sum", [t.pipeline_s for t in timings]),
        _row("delivery (C-STORE of SEG and SR to Orthanc)", [t.delivery_s for t in timings]),
        _row("other (outputs stored, outbox poll wait, commits)", [t.other_s for t in timings]),
        _row("**total (delivered_at - last instance)**", [t.total_s for t in timings]),
        _row("Orthanc forwarding the study (not in the total)", [t.forward_s for t in timings]),
    ]
    worst = max(t.total_s for t in timings)
    model_text = (
        f"Models: the shipped demo models (`{models.segmentation.relative_to(REPOSITORY_ROOT)}`, "
        f"`{models.nomogram.relative_to(REPOSITORY_ROOT)}`)."
        if models.is_shipped_demo
        else "Models: a 1 x 1 threshold convolution and a hand-written nomogram, because `models/demo` was not built."
    )
    return "\n".join(
        [
            LATENCY_HEADING,
            "",
            "From the last instance of a complete study received to the node's SEG and",
            f"SR stored in the PACS. The target is at most {TARGET_S:.0f} s on a 2-core CPU.",
            "",
            "Command, from the repository root:",
            "",
            f"    {command}",
            "",
            f"Setup: Orthanc 1.10 stores a phantom study of CE-T1, T2 and T1 of {slices}",
            f"slices of {size} x {size} pixels and forwards it to `otscc-node serve` with",
            "`POST /modalities/node/store`. The node runs with its default settings",
            "(quiet period 10 s, check interval 1 s, fsync on, one worker, outbox poll",
            "1 s) plus a clinical CSV with each study's T category and depth of",
            "invasion, and sends the SEG and SR back to Orthanc. The studies go one after",
            "another, after the node has loaded its model. Times come from the node's",
            "database. `delivered_at` is the end of the C-STORE to Orthanc, which",
            "stores an instance before it responds.",
            "",
            model_text,
            "",
            f"Machine: {machine_description()}. 1-minute load average {loads[0]:.1f} at",
            f"the start and {loads[1]:.1f} at the end. Measured {dt.date.today().isoformat()}.",
            "",
            f"| seconds | {header} | median |",
            "|---|" + "---|" * (len(timings) + 1),
            *rows,
            "",
            f"Target of at most {TARGET_S:.0f} s: {'met' if worst <= TARGET_S else 'not met'} (worst {worst:.1f} s).",
            "",
            *READING_NOTES,
        ]
    )


def memory_section(timings: list[StudyTiming], loaded_mib: float, command: str) -> str:
    """Return the markdown of the memory section."""
    peaks = ", ".join(f"{t.peak_rss_mib:.0f} MiB" for t in timings)
    return "\n".join(
        [
            MEMORY_HEADING,
            "",
            "The node's peak resident memory: the `VmHWM` of the `otscc-node serve`",
            "process and of its child processes (the pipeline worker and Python's",
            "resource tracker), summed, which bounds the peak of the whole from above.",
            f"Measured in the same run as the end-to-end latency (`{command}`).",
            "",
            f"- after the segmentation model was loaded, before the first job: {loaded_mib:.0f} MiB",
            f"- after each job, in order: {peaks}",
            "",
            "VmHWM never decreases, so the figure after a job is the peak up to then,",
            "including model loading. The node keeps one model in memory and runs one",
            "job at a time with the default `inference.workers = 1`.",
            "",
        ]
    )


def replace_section(document: str, heading: str, section: str) -> str:
    """Replace the section starting at ``heading`` up to the next level-2 heading, or append it."""
    start = document.find(heading + "\n")
    if start < 0:
        return document.rstrip("\n") + "\n\n" + section
    end = document.find("\n## ", start + len(heading))
    rest = "" if end < 0 else document[end + 1:]
    return document[:start] + section + ("\n" + rest if rest else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and optionally write it into ``docs/benchmarks.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3, help="number of studies, sent one after another (default 3)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice (default 512)")
    parser.add_argument("--slices", type=int, default=24, help="slices per series (default 24)")
    parser.add_argument("--write-docs", action="store_true", help="replace this benchmark's sections in docs/benchmarks.md")
    args = parser.parse_args(argv)

    models = shipped_demo_models()
    if models is None:
        print("models/demo is missing: measuring with a threshold model instead of the demo model", file=sys.stderr)
        models = threshold_models(Path(tempfile.mkdtemp(prefix="otscc-e2e-models-")))
    load_before = os.getloadavg()[0]
    timings, loaded_mib = run(args.studies, args.size, args.slices, models)
    load_after = os.getloadavg()[0]

    command = ".venv/bin/python benchmarks/bench_end_to_end.py " + " ".join(argv if argv is not None else sys.argv[1:])
    latency = latency_section(timings, command.strip(), models, args.size, args.slices, (load_before, load_after))
    memory = memory_section(timings, loaded_mib, command.strip())
    print(latency)
    print(memory)
    if args.write_docs:
        document = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else "# Benchmarks\n"
        document = replace_section(document, LATENCY_HEADING, latency)
        document = replace_section(document, MEMORY_HEADING, memory)
        DOCS_PATH.write_text(document, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
