"""The ``otscc-node`` command: ``serve``, ``echo``, and the job commands ``jobs``, ``retry`` and ``send``.

``serve`` takes storescp-style flags; each flag overrides the config file
and the environment (see :mod:`config.settings`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from dicom_node.demo import add_demo_parser
from dicom_node.passwords import add_hash_password_parser
from dicom_node.logging_setup import LOG_LEVELS, configure_logging

logger = logging.getLogger(__name__)

DEFAULT_ECHO_CALLED_AE = "ANY-SCP"
DEFAULT_ECHO_CALLING_AE = "ECHOSCU"
JOB_COMMAND_REGISTRARS = ("add_jobs_parser", "add_retry_parser", "add_send_parser")


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="TOML settings file (default: $OTSCC_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", "-ll", choices=LOG_LEVELS, type=str.upper, help="log level (default: log_level setting, INFO)")
    parser.add_argument("--database-url", help="SQLAlchemy database URL (default: database.url setting or $DATABASE_URL)")


def _add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="receive studies and run the node until SIGTERM or SIGINT")
    _add_common_options(serve)
    serve.add_argument("port", nargs="?", type=int, help="TCP port to listen on (same as --port)")
    serve.add_argument("--port", "-p", dest="port_option", metavar="PORT", type=int, help="TCP port to listen on (default 11112)")
    serve.add_argument("--ae-title", "-aet", help="AE title of the node (at most 16 characters)")
    serve.add_argument("--bind-address", help="IP address to listen on (default 0.0.0.0)")
    serve.add_argument("--output-directory", "-od", type=Path, help="spool folder for received instances")
    serve.add_argument("--max-pdu", "-pdu", type=int, help="maximum PDU size to receive, in bytes (0 for no limit)")
    serve.add_argument("--acse-timeout", "-ta", type=float, help="timeout for ACSE messages, in seconds")
    serve.add_argument("--dimse-timeout", "-td", type=float, help="timeout for DIMSE messages, in seconds")
    serve.add_argument("--network-timeout", "-ts", type=float, help="timeout for the network socket, in seconds")
    serve.add_argument("--max-associations", type=int, help="maximum number of concurrent associations")
    serve.set_defaults(func=_run_serve)


def _add_echo_parser(subparsers: argparse._SubParsersAction) -> None:
    echo = subparsers.add_parser("echo", help="send a C-ECHO (verification) to a DICOM peer, like echoscu")
    echo.add_argument("host", help="peer host name or IP address")
    echo.add_argument("port", type=int, help="peer TCP port")
    echo.add_argument("--call", "-aec", default=DEFAULT_ECHO_CALLED_AE, help=f"called AE title of the peer (default {DEFAULT_ECHO_CALLED_AE})")
    echo.add_argument("--aetitle", "-aet", default=DEFAULT_ECHO_CALLING_AE, help=f"calling AE title (default {DEFAULT_ECHO_CALLING_AE})")
    echo.add_argument("--timeout", "-to", type=float, default=30.0, help="connection and ACSE timeout, in seconds (default 30)")
    echo.add_argument("--log-level", "-ll", choices=LOG_LEVELS, type=str.upper, default="INFO", help="log level (default INFO)")
    echo.set_defaults(func=_run_echo)


def _add_job_parsers(subparsers: argparse._SubParsersAction) -> None:
    # The job commands live in dicom_node.cli_jobs; each registrar adds a
    # subparser whose `func` default takes (args, settings) and returns an exit code.
    try:
        cli_jobs = importlib.import_module("dicom_node.cli_jobs")
    except ModuleNotFoundError as exc:
        if exc.name != "dicom_node.cli_jobs":
            raise
        cli_jobs = None
    for registrar_name in JOB_COMMAND_REGISTRARS:
        registrar = getattr(cli_jobs, registrar_name, None)
        if registrar is not None:
            registrar(subparsers)
            continue
        command = registrar_name.removeprefix("add_").removesuffix("_parser")
        missing = subparsers.add_parser(command, help=f"{command} (not available: dicom_node.cli_jobs.{registrar_name} is missing)")
        missing.set_defaults(func=_missing_command, missing=f"dicom_node.cli_jobs.{registrar_name}")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``otscc-node`` argument parser."""
    parser = argparse.ArgumentParser(prog="otscc-node", description="DICOM AI node for oral tongue cancer MRI")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_serve_parser(subparsers)
    _add_echo_parser(subparsers)
    _add_job_parsers(subparsers)
    add_demo_parser(subparsers)
    add_hash_password_parser(subparsers)
    return parser


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the ``serve`` flags that were given into a nested settings override dict."""
    if args.port is not None and args.port_option is not None and args.port != args.port_option:
        raise ValueError(f"port given twice ({args.port} and --port {args.port_option}); give it once")
    node_flags = {
        "port": args.port if args.port is not None else args.port_option,
        "ae_title": args.ae_title,
        "bind_address": args.bind_address,
        "max_pdu": args.max_pdu,
        "acse_timeout_s": args.acse_timeout,
        "dimse_timeout_s": args.dimse_timeout,
        "network_timeout_s": args.network_timeout,
        "max_associations": args.max_associations,
    }
    overrides: dict[str, Any] = {}
    node = {key: value for key, value in node_flags.items() if value is not None}
    if node:
        overrides["node"] = node
    if args.output_directory is not None:
        overrides["storage"] = {"spool_dir": str(args.output_directory)}
    return overrides


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    overrides = dict(extra or {})
    if getattr(args, "database_url", None):
        overrides["database"] = {"url": args.database_url}
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    return load_settings(getattr(args, "config", None), overrides=overrides)


def _run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from dicom_node.app import Node
    from dicom_node.isolated_step import IsolatedPipelineStep

    # The pipeline runs in worker processes, so inference does not share the
    # SCP's interpreter and cannot take it down if it crashes. Loading
    # TensorFlow and the model takes seconds. The SCP accepts studies
    # meanwhile, and the first job waits for the model.
    step = IsolatedPipelineStep(settings, workers=settings.inference.workers)
    threading.Thread(target=_warm_up, args=(step,), name="otscc-warm-up", daemon=True).start()
    try:
        Node(settings, pipeline_step=step).serve_forever()
    except OSError as exc:
        # Binding the port, or creating the spool or database folder, failed.
        print(
            f"otscc-node serve: cannot start on {settings.node.bind_address}:{settings.node.port}: {exc}; "
            "check that the port is free and the data folder is writable",
            file=sys.stderr,
        )
        return 1
    except ValueError as exc:
        # An allowed_peers host that does not resolve, or TLS files that do not load.
        print(f"otscc-node serve: invalid configuration: {exc}", file=sys.stderr)
        return 2
    finally:
        step.close()
    return 0


def _warm_up(step: Any) -> None:
    from dicom_node.isolated_step import PipelineStopped

    try:
        step.warm_up()
    except PipelineStopped:
        logger.info("model warm-up ended because the node is stopping")
    except Exception as exc:  # noqa: BLE001 - reported here; each job reports it again
        logger.error("segmentation model cannot be loaded: %s; jobs fail until it is fixed", exc)


def _run_echo(args: argparse.Namespace, _settings: Settings | None) -> int:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.sop_class import Verification

    from dicom_node.transport import NoDelayApplicationEntity

    ae = NoDelayApplicationEntity(ae_title=args.aetitle)
    ae.add_requested_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = args.timeout
    ae.connection_timeout = args.timeout
    assoc = ae.associate(args.host, args.port, ae_title=args.call)
    if not assoc.is_established:
        print(f"association with {args.call} at {args.host}:{args.port} was rejected, aborted or failed", file=sys.stderr)
        return 1
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and int(status.Status) == 0:
        print(f"C-ECHO to {args.call} at {args.host}:{args.port}: Success")
        return 0
    print(f"C-ECHO to {args.call} at {args.host}:{args.port} failed: no or non-success response", file=sys.stderr)
    return 1


def _missing_command(args: argparse.Namespace, _settings: Settings | None) -> int:
    print(f"otscc-node {args.command} is not available in this build: {args.missing} is missing", file=sys.stderr)
    return 2


def _call(func: Any, args: argparse.Namespace, settings: Settings | None) -> int:
    if len(inspect.signature(func).parameters) == 1:
        return int(func(args) or 0)
    return int(func(args, settings) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otscc-node`` with ``argv`` (the process arguments by default) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.func is _run_echo:
        configure_logging(args.log_level)
        return _run_echo(args, None)

    try:
        extra = serve_overrides(args) if args.func is _run_serve else None
        settings = _load(args, extra)
    except ValueError as exc:
        parser.exit(2, f"otscc-node: error: {exc}\n")
    configure_logging(settings.log_level)
    return _call(args.func, args, settings)


if __name__ == "__main__":
    sys.exit(main())
