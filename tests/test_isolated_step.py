"""The pipeline runs in a worker process: results, input errors, crashes and orphaned workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Job
from db.session import session_scope
from db.states import JobState
from dicom_node.isolated_step import IsolatedPipelineStep, PipelineProcessError, PipelineStopped, load_step_class
from dicom_node.pipeline_step import JobContext, StepOutcome
from dicom_node.runner import JobRunner
from tests.peers import wait_until
from tests.runner_helpers import ReportStep, job_state, make_settings, queue_study

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 120


class WorkerReportStep(ReportStep):
    """:class:`ReportStep` built from settings in a worker; it notes the worker's process id."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.pid_file = settings.storage.data_dir / "worker.pid"

    def warm_up(self) -> None:
        """Write this worker's process id next to the spool."""
        self.pid_file.write_text(str(os.getpid()), encoding="utf-8")

    def run(self, context: JobContext) -> StepOutcome:
        """Run :meth:`ReportStep.run` and add this worker's process id to the summary."""
        outcome = super().run(context)
        outcome.result_summary["worker_pid"] = os.getpid()
        return outcome


class SleepingStep(WorkerReportStep):
    """A step whose job outlasts any test: it sleeps for ten minutes."""

    def run(self, context: JobContext) -> StepOutcome:
        """Note the worker's process id, then sleep."""
        self.warm_up()
        time.sleep(600)
        raise AssertionError("the sleeping step was not stopped")


class UnpicklableError(Exception):
    """An exception whose constructor takes two arguments, so unpickling it from its args fails."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class TwoJobStep(WorkerReportStep):
    """A step that ends its process for job 1 and returns a report for any other job after a pause."""

    def run(self, context: JobContext) -> StepOutcome:
        """Exit for job 1; otherwise wait for the pid file of job 1's worker to vanish, then report."""
        if context.job_id == 1:
            (self.pid_file.parent / "job1.pid").write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(2.0)
            os._exit(9)
        time.sleep(4.0)
        return StepOutcome(result_summary={"worker_pid": os.getpid()})


class RaisingStep(WorkerReportStep):
    """A step that raises an exception that does not pickle back from its arguments."""

    def run(self, context: JobContext) -> StepOutcome:
        """Raise :class:`UnpicklableError`."""
        raise UnpicklableError("model output has NaN", "slice 12")


class ExitingStep:
    """A step whose process ends abruptly, as one killed for memory does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, context: JobContext) -> StepOutcome:
        """End the process with exit code 9 and no clean-up."""
        os._exit(9)


class UnbuildableStep:
    """A step whose constructor fails, as one with a wrong setting does."""

    def __init__(self, settings: Settings) -> None:
        raise ValueError("clinical.csv_path /nonexistent.csv not found")


REPORT_STEP = f"{__name__}:WorkerReportStep"
UNBUILDABLE_STEP = f"{__name__}:UnbuildableStep"
EXITING_STEP = f"{__name__}:ExitingStep"
SLEEPING_STEP = f"{__name__}:SleepingStep"
TWO_JOB_STEP = f"{__name__}:TwoJobStep"
RAISING_STEP = f"{__name__}:RaisingStep"


def _job(session_factory: sessionmaker[Session], job_id: int) -> Job:
    with session_scope(session_factory) as session:
        return session.get(Job, job_id)


def _run_in_worker(
    tmp_path: Path, session_factory: sessionmaker[Session], *, step_path: str = REPORT_STEP, **study_options: object
) -> tuple[int, JobState]:
    """Queue a study, run its job through a worker process and return the job id and end state."""
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings, **study_options)
    step = IsolatedPipelineStep(settings, workers=1, step_path=step_path)
    try:
        return job_id, JobRunner(settings, session_factory, step).run_one(job_id)
    finally:
        step.close()


def test_job_runs_in_a_worker_process(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    job_id, state = _run_in_worker(tmp_path, session_factory)

    assert state is JobState.DONE
    summary = _job(session_factory, job_id).result_summary
    assert summary["instance_numbers"] == {role: [1, 2, 3] for role in ("ce_t1", "t2", "t1")}
    assert summary["worker_pid"] != os.getpid()


def test_input_error_crosses_processes(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    job_id, state = _run_in_worker(tmp_path, session_factory, roles=("t2", "t1"))

    assert state is JobState.FAILED_INPUT
    job = _job(session_factory, job_id)
    assert job.reason_code == "missing_role"
    assert job.hint == "send the contrast-enhanced T1 series"


def test_crashed_worker_fails_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    crashing = IsolatedPipelineStep(settings, workers=1, step_path=EXITING_STEP)
    first = queue_study(session_factory, settings)
    second = queue_study(session_factory, settings)
    try:
        runner = JobRunner(settings, session_factory, crashing)
        assert runner.run_one(first) is JobState.FAILED
        # A second job gets a new worker, which fails the same way, rather
        # than hanging on the broken pool.
        assert runner.run_one(second) is JobState.FAILED
    finally:
        crashing.close()

    job = _job(session_factory, first)
    assert job.reason_code == "internal_error"
    assert "PipelineProcessError" in job.error_message
    assert f"job {first}" in job.error_message


def test_idle_worker_killed_is_replaced(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    step = IsolatedPipelineStep(settings, workers=1, step_path=REPORT_STEP)
    try:
        step.warm_up()
        first_pid = int((tmp_path / "worker.pid").read_text(encoding="utf-8"))
        os.kill(first_pid, signal.SIGKILL)
        # Wait until the pool has noticed, so the next call meets a broken pool.
        executor = step._slots[0].executor
        wait_until(lambda: executor._broken, 30, "the pool to notice the killed worker")
        step.warm_up()
        second_pid = int((tmp_path / "worker.pid").read_text(encoding="utf-8"))
    finally:
        step.close()

    assert second_pid != first_pid


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie process still accepts signal 0, so its state letter in /proc decides.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_worker_ends_when_the_node_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from tests.runner_helpers import make_settings\n"
        "from dicom_node.isolated_step import IsolatedPipelineStep\n"
        "if __name__ == '__main__':\n"
        "    step = IsolatedPipelineStep(make_settings(__import__('pathlib').Path(sys.argv[1])), "
        f"workers=1, step_path={REPORT_STEP!r})\n"
        "    step.warm_up()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    (tmp_path / "parent.py").write_text(script, encoding="utf-8")
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        worker_pid = int((tmp_path / "worker.pid").read_text(encoding="utf-8"))
        assert _process_exists(worker_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        wait_until(lambda: not _process_exists(worker_pid), 30, "the orphaned worker to exit")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_step_path_must_name_a_class() -> None:
    assert load_step_class(REPORT_STEP) is WorkerReportStep
    with pytest.raises(ValueError, match="package.module:ClassName"):
        load_step_class("tests.test_isolated_step.WorkerReportStep")
    with pytest.raises(ValueError, match="nothing importable"):
        load_step_class("tests.no_such_module:Step")


def _run_in_thread(step: IsolatedPipelineStep, settings: Settings, *, job_id: int) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``step.run`` for a job without series in a thread; return the thread and the errors it will collect."""
    context = JobContext(job_id=job_id, run_number=1, study_instance_uid="1.2.3", series={}, settings=settings)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            step.run(context)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    return caller, errors


def test_close_ends_a_running_call(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    step = IsolatedPipelineStep(settings, workers=1, step_path=SLEEPING_STEP)
    caller, errors = _run_in_thread(step, settings, job_id=1)
    wait_until(lambda: (tmp_path / "worker.pid").exists(), 120, "the worker to start the job")
    worker_pid = int((tmp_path / "worker.pid").read_text(encoding="utf-8"))
    step.close()
    caller.join(timeout=30)

    assert not caller.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], PipelineStopped)
    assert "job 1" in str(errors[0])
    wait_until(lambda: not _process_exists(worker_pid), 30, "the stopped worker to exit")
    with pytest.raises(PipelineStopped, match="restart the node"):
        step.warm_up()


def test_stop_leaves_job_running(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    step = IsolatedPipelineStep(settings, workers=1, step_path=SLEEPING_STEP)
    runner = JobRunner(settings, session_factory, step, poll_interval_s=0.2)
    runner.start()
    threads = list(runner._threads)
    try:
        wait_until(lambda: (tmp_path / "worker.pid").exists(), 120, "the worker to start the job")
    finally:
        runner.stop(timeout_s=1.0)
        step.close()
    for thread in threads:
        thread.join(timeout=30)

    assert not any(thread.is_alive() for thread in threads)
    assert job_state(session_factory, job_id) is JobState.RUNNING
    assert _job(session_factory, job_id).error_message is None


def test_unbuildable_step_fails_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    job_id, state = _run_in_worker(tmp_path, session_factory, step_path=UNBUILDABLE_STEP)

    assert state is JobState.FAILED
    message = _job(session_factory, job_id).error_message
    assert "could not be built" in message
    assert "clinical.csv_path /nonexistent.csv not found" in message


def test_worker_ignores_sigterm_during_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    step = IsolatedPipelineStep(settings, workers=1, step_path=SLEEPING_STEP)
    caller, errors = _run_in_thread(step, settings, job_id=3)
    try:
        wait_until(lambda: (tmp_path / "worker.pid").exists(), 120, "the worker to start the job")
        worker_pid = int((tmp_path / "worker.pid").read_text(encoding="utf-8"))
        os.kill(worker_pid, signal.SIGTERM)
        os.kill(worker_pid, signal.SIGINT)
        # The default action of either signal would end the process at once.
        time.sleep(2.0)
        assert _process_exists(worker_pid)
    finally:
        step.close()
        caller.join(timeout=30)

    assert not caller.is_alive()
    assert [type(error) for error in errors] == [PipelineStopped]


def test_crash_spares_other_worker_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    step = IsolatedPipelineStep(settings, workers=2, step_path=TWO_JOB_STEP)
    results: dict[int, object] = {}

    def run(job_id: int) -> None:
        context = JobContext(job_id=job_id, run_number=1, study_instance_uid="1.2.3", series={}, settings=settings)
        try:
            results[job_id] = step.run(context)
        except PipelineProcessError as exc:
            results[job_id] = exc

    threads = [threading.Thread(target=run, args=(job_id,)) for job_id in (1, 2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
    finally:
        step.close()

    assert isinstance(results[1], PipelineProcessError)
    assert isinstance(results[2], StepOutcome)
    assert results[2].result_summary["worker_pid"] != int((tmp_path / "job1.pid").read_text(encoding="utf-8"))


def test_step_error_keeps_type_message(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    job_id, state = _run_in_worker(tmp_path, session_factory, step_path=RAISING_STEP)

    assert state is JobState.FAILED
    # A broken pool would have been reported as an ended worker instead.
    message = _job(session_factory, job_id).error_message
    assert message == "PipelineStepError: UnpicklableError: model output has NaN"
