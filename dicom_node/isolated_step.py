"""Run the study pipeline in a child process, apart from the DICOM receiver.

Inference, radiomics and the writers spend most of their time in Python
code that holds the interpreter lock. In the node's own process they would
compete with every C-STORE that arrives meanwhile for that lock, and a crash
of a native library (TensorFlow, SimpleITK, ITK) or the kernel's
out-of-memory killer would stop the receiver as well.
:class:`IsolatedPipelineStep` keeps the pipeline in worker processes of its
own: the runner calls it as it would call the step itself, and only a
:class:`~dicom_node.pipeline_step.JobContext` goes in and a
:class:`~dicom_node.pipeline_step.StepOutcome` comes back. Each worker has
a process pool of its own, so a crash fails only the job that worker ran.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from config.settings import Settings
from dicom_node.logging_setup import configure_logging
from dicom_node.pipeline_step import JobContext, StepOutcome
from inference.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_STEP = "dicom_node.study_pipeline:StudyPipeline"
PARENT_CHECK_INTERVAL_S = 1.0

# The step built in each worker process by _start_worker, or the error that
# stopped it from being built.
_worker_step: Any = None
_worker_error: Exception | None = None


class PipelineProcessError(RuntimeError):
    """The pipeline's worker process ended while it ran a job."""


class PipelineStopped(PipelineProcessError):
    """The node stopped the pipeline's workers while a call was running or waiting."""


class PipelineStepError(RuntimeError):
    """An error the pipeline step raised in its worker, other than an :class:`InputError`.

    It carries the original exception's type and message; the traceback is
    in the worker's log.
    """


def load_step_class(path: str) -> type:
    """Return the class named by ``path``, written ``"package.module:ClassName"``.

    Raises
    ------
    ValueError
        If ``path`` is not of that form or names nothing importable.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"step path {path!r} is not 'package.module:ClassName'; write it in that form")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"step path {path!r} names nothing importable ({exc}); check the module and class name") from exc


def _exit_when_orphaned(parent_pid: int) -> None:
    # A node killed with SIGKILL cannot stop its workers. A worker whose
    # parent process id changes was orphaned, so it exits and frees the model.
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_INTERVAL_S)
    os._exit(1)


def _start_worker(step_path: str, settings: Settings, log_level: str, parent_pid: int) -> None:
    global _worker_step, _worker_error
    # SIGTERM or Ctrl-C sent to the node's process group must not end a job
    # half way: the node decides when its workers stop (see close()).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="otscc-parent-check", daemon=True).start()
    configure_logging(log_level)
    # An initializer that raises breaks the pool, and every call would then
    # report a crashed worker. The error is kept and raised by each call.
    try:
        _worker_step = load_step_class(step_path)(settings)
    except Exception as exc:  # noqa: BLE001 - raised again by _worker_call
        _worker_error = exc
        logger.exception("pipeline step %s could not be built in the worker process", step_path)


def _worker_call(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _worker_error is not None:
        raise PipelineStepError(
            f"the pipeline step could not be built: {type(_worker_error).__name__}: {_worker_error}; "
            "fix the configuration and restart the node"
        )
    try:
        return getattr(_worker_step, method)(*args, **kwargs)
    except InputError:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit included, so the worker stays up
        # Not every exception pickles, and one that fails to unpickle in the
        # node would break the pool. The traceback stays in this log; the
        # node gets the type and the message.
        logger.exception("pipeline step %s failed in the worker process", method)
        raise PipelineStepError(f"{type(exc).__name__}: {exc}") from None


def _stopped(method: str) -> PipelineStopped:
    return PipelineStopped(f"the pipeline is stopped, so {method} cannot run; restart the node")


class _Slot:
    """One worker process, in a single-worker pool so that its crash touches no other job."""

    def __init__(self) -> None:
        self.executor: ProcessPoolExecutor | None = None


class IsolatedPipelineStep:
    """A :class:`~dicom_node.pipeline_step.PipelineStep` that runs another one in worker processes.

    Parameters
    ----------
    settings : Settings
        Passed to the step's constructor in each worker.
    workers : int
        Worker processes, one per job that may run at once; set it to the
        runner's worker count.
    step_path : str
        The step class, ``"package.module:ClassName"``; it is imported in
        the workers only, so this process never loads TensorFlow.
    log_level : str
        Log level of the workers, which log to standard error as the node does.
    """

    def __init__(
        self, settings: Settings, *, workers: int = 1, step_path: str = DEFAULT_STEP, log_level: str | None = None
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}; set inference.workers >= 1")
        self._settings = settings
        self._step_path = step_path
        self._log_level = log_level or settings.log_level
        self._lock = threading.Lock()
        self._closed = False
        self._slots = [_Slot() for _ in range(workers)]
        self._free: queue.Queue[_Slot] = queue.Queue()
        for slot in self._slots:
            self._free.put(slot)

    def warm_up(self) -> None:
        """Start the workers and have each load its model, so the first job does not wait for it."""
        slots = [self._free.get() for _ in self._slots]
        try:
            calls = [(slot, *self._submit(slot, "warm_up", (), {})) for slot in slots]
            for slot, executor, future in calls:
                self._result(slot, executor, future, "warm-up")
        finally:
            for slot in slots:
                self._free.put(slot)

    def run(self, context: JobContext) -> StepOutcome:
        """Run the step on ``context`` in a worker and return its outcome.

        Raises
        ------
        InputError
            As the step raises it.
        PipelineStepError
            For any other error of the step, with its type and message.
        PipelineProcessError
            If the worker ended during the job, for example killed for memory.
        """
        return self._call("run", (context,), {}, f"job {context.job_id}")

    def report_failure(self, context: JobContext, error: InputError, *, reference_path: Path | None = None) -> StepOutcome:
        """Have a worker build the failure report of a job the study assembly failed."""
        return self._call("report_failure", (context, error), {"reference_path": reference_path}, f"job {context.job_id}")

    def close(self) -> None:
        """Stop the workers now, ending any call in progress with :class:`PipelineStopped`.

        The node calls this when it stops, after the runner has waited for
        the running job as long as it will. A job cut short stays running in
        the database and is queued again at the next start. Without this,
        the interpreter would wait at exit for the worker to finish its job.
        """
        with self._lock:
            self._closed = True
            executors = [slot.executor for slot in self._slots if slot.executor is not None]
            for slot in self._slots:
                slot.executor = None
        for executor in executors:
            # ProcessPoolExecutor has no public way to end busy workers before
            # Python 3.14 (terminate_workers), so its process table is read
            # here. Workers ignore SIGTERM, so they get SIGKILL.
            workers = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                if process.is_alive():
                    process.kill()

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], activity: str) -> Any:
        slot = self._free.get()
        try:
            executor, future = self._submit(slot, method, args, kwargs)
            return self._result(slot, executor, future, activity)
        finally:
            self._free.put(slot)

    def _submit(
        self, slot: _Slot, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ProcessPoolExecutor, Future[Any]]:
        # A worker that ended while idle (killed for memory, say) leaves a
        # broken pool. Nothing of this call ran yet, so it goes to a new one.
        for _attempt in range(2):
            executor = self._executor(slot, method)
            try:
                return executor, executor.submit(_worker_call, method, args, kwargs)
            except BrokenProcessPool:
                logger.warning("pipeline worker process had ended while idle; starting a new one")
                self._discard(slot, executor)
            except RuntimeError as exc:
                # submit() after shutdown(): close() ran in between.
                raise _stopped(method) from exc
        raise PipelineProcessError(f"no pipeline worker process could be started for {method}; see the log above")

    def _executor(self, slot: _Slot, method: str) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise _stopped(method)
            if slot.executor is None:
                slot.executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self._step_path, self._settings, self._log_level, os.getpid()),
                )
            return slot.executor

    def _result(self, slot: _Slot, executor: ProcessPoolExecutor, future: Future[Any], activity: str) -> Any:
        try:
            return future.result()
        except (BrokenProcessPool, CancelledError) as exc:
            if self._closed:
                raise PipelineStopped(f"the node stopped the pipeline during {activity}") from exc
            logger.error("pipeline worker process ended during %s; a new one starts with the next call", activity)
            self._discard(slot, executor)
            raise PipelineProcessError(
                f"the pipeline worker process ended during {activity}, for example killed for lack of memory "
                "or by a crash in a native library; see the system log, then retry the job"
            ) from exc

    def _discard(self, slot: _Slot, executor: ProcessPoolExecutor) -> None:
        # A broken pool accepts no more work, so the next call starts a new one.
        with self._lock:
            if slot.executor is executor:
                slot.executor = None
        executor.shutdown(wait=False, cancel_futures=True)
