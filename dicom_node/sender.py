"""C-STORE SCU: send DICOM files to one destination and classify what happened.

The outbox decides from a :class:`SendReport` whether to retry. A failure is
transient when a later attempt may succeed, because the peer is down, busy or
out of resources. It is permanent when the same request will fail again, for
example when the peer rejects our AE title, does not support the SOP class or
cannot read the object.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ

from config.settings import DeliverySettings, DestinationSettings
from dicom_node.transport import NoDelayApplicationEntity

logger = logging.getLogger(__name__)

# PS3.8 section 7.1.1.9 and 9.3.4: A-ASSOCIATE-RJ result, source and reason.
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given (ACSE provider)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}

# C-STORE statuses (PS3.4 section B.2.3 and PS3.7 Annex C) that the outbox
# treats specially. Any other failure status is retried.
STATUS_SUCCESS = 0x0000
WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
_PERMANENT_STATUSES = frozenset(
    {
        0x0117,  # Invalid SOP Instance
        STATUS_SOP_CLASS_NOT_SUPPORTED,
        0x0124,  # Not authorized
        0x0211,  # Unrecognized operation
        0x0212,  # Mistyped argument
    }
)

MAX_PRESENTATION_CONTEXTS = 128
"""PS3.8 section 9.3.2.2: presentation context IDs are the 128 odd numbers 1 to 255."""


class SendOutcome(enum.Enum):
    """Outcome of sending one instance, or of a whole send."""

    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendTimeouts:
    """Network timeouts of one association, in seconds."""

    connection_s: float = 10.0
    acse_s: float = 30.0
    dimse_s: float = 60.0
    network_s: float = 60.0

    @classmethod
    def from_settings(cls, delivery: DeliverySettings) -> SendTimeouts:
        """Use ``delivery.association_timeout_s`` for connecting and association negotiation."""
        return cls(
            connection_s=delivery.association_timeout_s,
            acse_s=delivery.association_timeout_s,
        )


@dataclass(frozen=True)
class InstanceResult:
    """Outcome, status and message of sending one file."""

    path: Path
    sop_instance_uid: str | None
    outcome: SendOutcome
    status: int | None = None
    message: str = ""


@dataclass
class SendReport:
    """Result of one :func:`send_datasets` call.

    ``status`` is the first failure status a peer returned, or the
    A-ASSOCIATE-RJ result for a rejected association; None otherwise.
    """

    destination: str
    outcome: SendOutcome
    message: str
    instances: list[InstanceResult] = field(default_factory=list)
    status: int | None = None
    duration_s: float = 0.0

    @property
    def delivered(self) -> list[InstanceResult]:
        """Instances the peer accepted, with or without a warning."""
        return [result for result in self.instances if result.outcome is SendOutcome.DELIVERED]


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def classify_status(status: int) -> SendOutcome:
    """Return the outcome a C-STORE response status means for the sender."""
    if status == STATUS_SUCCESS or status in WARNING_STATUSES:
        return SendOutcome.DELIVERED
    if status in _PERMANENT_STATUSES or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return SendOutcome.PERMANENT
    # 0xA7xx out of resources, 0x0110 processing failure, 0x0213 resource
    # limitation, 0xFE00 cancel and statuses this table does not know.
    return SendOutcome.TRANSIENT


def _read_file_info(path: Path) -> _FileInfo:
    dataset = dcmread(path, stop_before_pixels=True)
    meta = dataset.file_meta
    return _FileInfo(
        path=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
    )


def _request_contexts(ae: NoDelayApplicationEntity, files: Sequence[_FileInfo]) -> None:
    # One context per SOP class, offering the file's own transfer syntax and
    # both uncompressed ones, so a peer that only takes Implicit VR Little
    # Endian (the PS3.5 section 10.1 default) still accepts the objects.
    syntaxes: dict[str, list[str]] = {}
    for info in files:
        offered = syntaxes.setdefault(info.sop_class_uid, [])
        for syntax in (info.transfer_syntax_uid, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax not in offered:
                offered.append(syntax)
    if len(syntaxes) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"the files use {len(syntaxes)} SOP classes but one association takes at most "
            f"{MAX_PRESENTATION_CONTEXTS}; send them in smaller groups"
        )
    for sop_class_uid, offered in syntaxes.items():
        ae.add_requested_context(sop_class_uid, offered)


@dataclass
class _Negotiation:
    """Evidence from the association's events: whether TCP connected, and the A-ASSOCIATE-RJ PDU's fields if one arrived."""

    connected: bool = False
    rejection: tuple[int, int, int] | None = None

    def on_open(self, event: evt.Event) -> None:
        self.connected = True

    def on_pdu(self, event: evt.Event) -> None:
        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_RJ):
            self.rejection = (pdu.result, pdu.source, pdu.reason_diagnostic)


def _describe_rejection(result: int, source: int, reason_code: int) -> tuple[SendOutcome, int | None, str]:
    reason = _REJECT_REASONS.get((source, reason_code), f"source {source}, reason {reason_code}")
    outcome = SendOutcome.PERMANENT if result == REJECTED_PERMANENT else SendOutcome.TRANSIENT
    return outcome, result, f"association rejected ({reason})"


def _failed_before_sending(
    destination: DestinationSettings,
    files: Sequence[_FileInfo],
    outcome: SendOutcome,
    message: str,
    status: int | None = None,
) -> SendReport:
    results = [InstanceResult(info.path, info.sop_instance_uid, outcome, None, message) for info in files]
    return SendReport(destination.name, outcome, message, results, status)


def _store_one(assoc: Association, info: _FileInfo) -> InstanceResult:
    accepted = [
        context for context in assoc.accepted_contexts if context.abstract_syntax == info.sop_class_uid
    ]
    if not accepted:
        return InstanceResult(
            info.path,
            info.sop_instance_uid,
            SendOutcome.PERMANENT,
            STATUS_SOP_CLASS_NOT_SUPPORTED,
            f"the peer accepted no presentation context for SOP class {info.sop_class_uid}",
        )

    dataset = dcmread(info.path)
    try:
        response = assoc.send_c_store(dataset)
    except RuntimeError:
        # pynetdicom raises this when the peer aborted between our check and the request.
        return InstanceResult(info.path, info.sop_instance_uid, SendOutcome.TRANSIENT, None, "association aborted by the peer")
    except ValueError as exc:
        # pynetdicom raises this when no accepted context can carry the file's
        # transfer syntax, for example a compressed file and a peer that took
        # only uncompressed syntaxes. The same peer will reject it again.
        message = f"no accepted presentation context fits transfer syntax {info.transfer_syntax_uid}: {exc}"
        return InstanceResult(info.path, info.sop_instance_uid, SendOutcome.PERMANENT, None, message)
    if "Status" not in response:
        reason = "association aborted" if assoc.is_aborted else "no valid response (DIMSE timeout or abort)"
        return InstanceResult(info.path, info.sop_instance_uid, SendOutcome.TRANSIENT, None, reason)

    status = int(response.Status)
    outcome = classify_status(status)
    comment = str(response.get("ErrorComment", "")).strip()
    if outcome is SendOutcome.DELIVERED:
        message = "" if status == STATUS_SUCCESS else f"stored with warning status 0x{status:04X}"
    else:
        message = f"C-STORE failed with status 0x{status:04X}"
    if comment:
        message = f"{message}: {comment}" if message else comment
    return InstanceResult(info.path, info.sop_instance_uid, outcome, status, message)


def _summarise(destination: DestinationSettings, results: list[InstanceResult]) -> SendReport:
    failures = [result for result in results if result.outcome is not SendOutcome.DELIVERED]
    if not failures:
        warnings = [result.message for result in results if result.message]
        message = f"{len(results)} instance(s) stored"
        if warnings:
            message += "; " + "; ".join(sorted(set(warnings)))
        return SendReport(destination.name, SendOutcome.DELIVERED, message, results)

    permanent = [result for result in failures if result.outcome is SendOutcome.PERMANENT]
    first = (permanent or failures)[0]
    outcome = SendOutcome.PERMANENT if permanent else SendOutcome.TRANSIENT
    message = f"{len(failures)} of {len(results)} instance(s) not stored: {first.message}"
    return SendReport(destination.name, outcome, message, results, first.status)


def send_datasets(
    destination: DestinationSettings,
    paths: Sequence[Path],
    *,
    calling_ae: str,
    timeouts: SendTimeouts | None = None,
) -> SendReport:
    """Send the DICOM files at ``paths`` to ``destination`` over one association.

    Network and peer failures are reported in the returned
    :class:`SendReport`, classed transient or permanent, and not raised.

    Raises
    ------
    ValueError
        If a file is missing or is not a DICOM Part 10 file, or the files use
        more SOP classes than one association can negotiate.
    """
    timeouts = timeouts or SendTimeouts()
    started = time.monotonic()
    try:
        files = [_read_file_info(Path(path)) for path in paths]
    except (OSError, InvalidDicomError, AttributeError) as exc:
        raise ValueError(f"cannot read the files to send to {destination.name}: {exc}; check the outputs folder") from exc
    if not files:
        return SendReport(destination.name, SendOutcome.DELIVERED, "nothing to send")

    ae = NoDelayApplicationEntity(ae_title=calling_ae)
    ae.connection_timeout = timeouts.connection_s
    ae.acse_timeout = timeouts.acse_s
    ae.dimse_timeout = timeouts.dimse_s
    ae.network_timeout = timeouts.network_s
    _request_contexts(ae, files)

    negotiation = _Negotiation()
    handlers = [(evt.EVT_CONN_OPEN, negotiation.on_open), (evt.EVT_PDU_RECV, negotiation.on_pdu)]
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, evt_handlers=handlers)
    try:
        report = _send_over(assoc, destination, files, negotiation)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    report.duration_s = time.monotonic() - started
    logger.info(
        "delivery attempt of %d file(s) to %s (%s@%s:%s): %s, %s",
        len(files),
        destination.name,
        destination.ae_title,
        destination.host,
        destination.port,
        report.outcome.value,
        report.message,
    )
    return report


def _send_over(
    assoc: Association, destination: DestinationSettings, files: Sequence[_FileInfo], negotiation: _Negotiation
) -> SendReport:
    if not assoc.is_established:
        if not negotiation.connected:
            message = (
                f"cannot connect to {destination.host}:{destination.port} "
                "(connection refused, unreachable or timed out)"
            )
            return _failed_before_sending(destination, files, SendOutcome.TRANSIENT, message)
        # The received PDU is used instead of assoc.is_rejected, because
        # pynetdicom 3.0.4 sometimes reports an abort when the peer closes the
        # connection right after its A-ASSOCIATE-RJ, as DCMTK's storescp does.
        if negotiation.rejection is not None:
            outcome, result, message = _describe_rejection(*negotiation.rejection)
            return _failed_before_sending(destination, files, outcome, message, result)
        message = "association aborted or timed out during negotiation"
        return _failed_before_sending(destination, files, SendOutcome.TRANSIENT, message)

    results: list[InstanceResult] = []
    for info in files:
        if not assoc.is_established:
            results.append(
                InstanceResult(info.path, info.sop_instance_uid, SendOutcome.TRANSIENT, None, "association lost before sending")
            )
            continue
        results.append(_store_one(assoc, info))
    return _summarise(destination, results)
