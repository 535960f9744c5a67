"""The C-STORE SCP: MR and Enhanced MR Image Storage plus Verification.

The association checks run in an ``EVT_REQUESTED`` handler, so that a host
can be checked together with its AE title. The C-STORE handler passes each
instance to :class:`~dicom_node.ingest.Ingestor` and returns its status.
"""

from __future__ import annotations

import logging
import threading

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import _config, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import EnhancedMRImageStorage, MRImageStorage, Verification

from config.settings import NodeSettings
from dicom_node import dimse_status, metrics
from dicom_node.ingest import Ingestor, Sender
from dicom_node.security import PeerPolicy, build_ssl_context
from dicom_node.transport import NoDelayApplicationEntity, NoDelayAssociationServer

logger = logging.getLogger(__name__)

# By default pynetdicom logs the identifiers of C-FIND, C-GET and C-MOVE
# requests and responses, which may contain patient names and IDs.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

STORAGE_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage)

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


def _peer_host(event: Event) -> str:
    return str(event.assoc.requestor.address)


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


class StorageScp:
    """The node's listening application entity.

    Parameters
    ----------
    settings : NodeSettings
        AE title, address, limits, access control and TLS.
    ingestor : Ingestor
        Stores each received instance.
    """

    def __init__(self, settings: NodeSettings, ingestor: Ingestor) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.policy = PeerPolicy.from_settings(settings)
        self.ssl_context = build_ssl_context(settings.tls)
        self.ae = self._make_ae()
        self._server: NoDelayAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _make_ae(self) -> NoDelayApplicationEntity:
        ae = NoDelayApplicationEntity(ae_title=self.settings.ae_title)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

        # The policy handler checks AE titles itself, so pynetdicom's own
        # checks are off and every rejection is logged with its reason.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.maximum_associations = self.settings.max_associations
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.acse_timeout = self.settings.acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.network_timeout_s
        return ae

    @property
    def port(self) -> int:
        """The port the server listens on, which differs from the setting when that is 0."""
        if self._server is None:
            raise RuntimeError("the SCP is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def is_listening(self) -> bool:
        """Whether the server thread is running and accepting associations."""
        return self._server is not None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the port and serve associations in a background thread."""
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_C_ECHO, self._on_c_echo),
        ]
        address = (self.settings.bind_address, self.settings.port)
        self._server = self.ae.make_server(
            address,
            evt_handlers=handlers,
            ssl_context=self.ssl_context,
            server_class=NoDelayAssociationServer,
        )
        # make_server does not register the server with the AE, as
        # start_server does. AE.active_associations, and so the
        # maximum_associations check, and AE.shutdown see registered servers only.
        self.ae._servers.append(self._server)
        self._thread = threading.Thread(target=self._server.serve_forever, name="dicom-scp", daemon=True)
        self._thread.start()
        logger.info(
            "DICOM SCP %s listening on %s:%d (TLS %s, max %d associations)",
            self.settings.ae_title,
            self.settings.bind_address,
            self.port,
            "on" if self.ssl_context else "off",
            self.settings.max_associations,
        )

    def stop(self) -> None:
        """Stop accepting, wait for the serving thread and close the port."""
        if self._server is None:
            return
        self.ae.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.network_timeout_s)
        self._server = None
        logger.info("DICOM SCP %s stopped", self.settings.ae_title)

    def _on_requested(self, event: Event) -> None:
        # The requestor's AE title is filled in only after this event, so
        # both titles come from the A-ASSOCIATE-RQ primitive.
        request = event.assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        host = _peer_host(event)
        reason = self.policy.check(calling, called, host)
        if reason is None:
            return
        logger.warning(
            "rejected association from %s at %s to %s: %s",
            calling,
            host,
            called,
            reason.name.lower().replace("_", " "),
        )
        metrics.record_association_rejected(reason.name.lower())
        event.assoc.acse.send_reject(*reason.result_source_diagnostic)
        # As pynetdicom does after its own rejections: wait until the DUL has
        # sent the A-ASSOCIATE-RJ and the peer closed the connection.
        event.assoc.kill()

    def _on_accepted(self, event: Event) -> None:
        calling = _calling_ae(event)
        host = _peer_host(event)
        accepted = event.assoc.accepted_contexts
        rejected = sorted({str(context.abstract_syntax) for context in event.assoc.rejected_contexts})
        logger.info(
            "association accepted from %s at %s: %d presentation contexts accepted, %d rejected",
            calling,
            host,
            len(accepted),
            len(event.assoc.rejected_contexts),
        )
        if rejected:
            # Many senders propose every storage SOP class they know, so the
            # rejected abstract syntaxes go on one line, not one line each.
            logger.info("rejected abstract syntaxes from %s: %s", calling, " ".join(rejected))
        if not any(str(context.abstract_syntax) in STORAGE_SOP_CLASSES for context in accepted) and rejected:
            logger.warning(
                "association from %s at %s has no accepted storage presentation context; "
                "this node accepts MR and Enhanced MR Image Storage only",
                calling,
                host,
            )

    def _on_aborted(self, event: Event) -> None:
        calling = _calling_ae(event)
        if not calling:
            # A port probe or health check: the peer connected and closed
            # without sending an A-ASSOCIATE-RQ.
            logger.debug("connection from %s closed before an association request", _peer_host(event))
            return
        logger.warning("association from %s at %s aborted", calling, _peer_host(event))

    def _on_c_echo(self, event: Event) -> int:
        logger.info("C-ECHO from %s", _calling_ae(event))
        return dimse_status.SUCCESS

    def _on_c_store(self, event: Event) -> int:
        request = event.request
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        result = self.ingestor.store(
            dataset,
            event.encoded_dataset(include_meta=True),
            requested_sop_class=str(request.AffectedSOPClassUID),
            sender=Sender(ae_title=_calling_ae(event), host=_peer_host(event)),
        )
        logger.debug(
            "C-STORE of SOP instance %s from %s: %s (%s)",
            request.AffectedSOPInstanceUID,
            _calling_ae(event),
            dimse_status.describe_status(result.status),
            result.outcome.value,
        )
        metrics.record_instance_received(result.outcome.value)
        return result.status
