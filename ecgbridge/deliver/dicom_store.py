"""DICOM C-STORE SCU: send the ECG waveform to a PACS or ECG management system."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from ecgbridge import codes
from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt
from ecgbridge.deliver.settings import DicomDestinationSettings, DicomTlsSettings
from ecgbridge.errors import DeliveryError

log = logging.getLogger(__name__)

#: Waveform storage SOP classes ecgbridge sends (PS3.4 Annex B).
SENDABLE_SOP_CLASSES: tuple[str, ...] = (codes.TWELVE_LEAD_ECG_WAVEFORM, codes.GENERAL_ECG_WAVEFORM)

#: Transfer syntaxes proposed for each SOP class, preferred first.
PROPOSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: C-STORE statuses (PS3.4 B.2.3 and PS3.7 C).
STATUS_SUCCESS = 0x0000
STATUS_WARNING_COERCION = 0xB000
STATUS_WARNING_ELEMENTS_DISCARDED = 0xB006
STATUS_WARNING_DATASET_MISMATCH = 0xB007
WARNING_STATUSES = frozenset(
    {STATUS_WARNING_COERCION, STATUS_WARNING_ELEMENTS_DISCARDED, STATUS_WARNING_DATASET_MISMATCH}
)
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_RESOURCE_LIMITATION = 0x0213
#: 0xA7xx: refused, out of resources (try later).
OUT_OF_RESOURCES_MASK = 0xFF00
OUT_OF_RESOURCES_PREFIX = 0xA700
#: Failure statuses worth retrying besides 0xA7xx: the peer may recover.
TRANSIENT_FAILURE_STATUSES = frozenset({STATUS_PROCESSING_FAILURE, STATUS_RESOURCE_LIMITATION})

_STATUS_MEANINGS: dict[int, str] = {
    STATUS_SUCCESS: "success",
    STATUS_WARNING_COERCION: "warning: coercion of data elements",
    STATUS_WARNING_ELEMENTS_DISCARDED: "warning: elements discarded",
    STATUS_WARNING_DATASET_MISMATCH: "warning: data set does not match SOP class",
    STATUS_PROCESSING_FAILURE: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0x0210: "duplicate invocation",
    STATUS_RESOURCE_LIMITATION: "resource limitation",
}


def describe_status(status: int) -> str:
    """Return ``"0xA700 (refused: out of resources)"`` style text for a C-STORE status."""
    meaning = _STATUS_MEANINGS.get(status)
    if meaning is None:
        if status & OUT_OF_RESOURCES_MASK == OUT_OF_RESOURCES_PREFIX:
            meaning = "refused: out of resources"
        elif status & 0xFF00 == 0xA900:
            meaning = "error: data set does not match SOP class"
        elif status & 0xF000 == 0xC000:
            meaning = "error: cannot understand"
        elif status & 0xF000 == 0xB000:
            meaning = "warning"
        else:
            meaning = "failure"
    return f"0x{status:04X} ({meaning})"


def is_retryable_status(status: int) -> bool:
    """Whether a failed C-STORE with `status` may succeed when tried again later.

    Out-of-resources (0xA7xx), resource limitation (0x0213) and processing failure
    (0x0110) are transient; data set mismatches (0xA9xx), cannot-understand
    (0xCxxx), unsupported SOP class and authorization refusals are not.
    """
    if status & OUT_OF_RESOURCES_MASK == OUT_OF_RESOURCES_PREFIX:
        return True
    return status in TRANSIENT_FAILURE_STATUSES


def build_tls_context(tls: DicomTlsSettings) -> ssl.SSLContext:
    """Return a client SSL context from the configured PEM files.

    Raises
    ------
    DeliveryError
        Not retryable, if a certificate or key file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(tls.ca_file) if tls.ca_file is not None else None,
        )
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(
            f"dicom: cannot load the TLS certificate files ({exc})", retryable=False
        ) from exc
    context.check_hostname = tls.verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class DicomStoreDestination:
    """Send the item's DICOM waveform (``files["dicom"]``) by C-STORE.

    One association per delivery: it is opened, used for one C-STORE and released,
    so a daemon never holds idle connections to the PACS.

    Parameters
    ----------
    settings : DicomDestinationSettings
        Peer AE title, host, port, our AE title, TLS and timeouts.
    name : str
        Destination name in the journal.
    """

    def __init__(self, settings: DicomDestinationSettings, name: str = "dicom") -> None:
        self.settings = settings
        self.name = name
        self._tls_context = build_tls_context(settings.tls) if settings.tls else None

    @property
    def peer(self) -> str:
        """``AE@host:port`` of the receiving peer, for messages."""
        s = self.settings
        return f"{s.ae_title}@{s.host}:{s.port}"

    def deliver(self, item: DeliveryItem) -> DeliveryReceipt:
        """Store the waveform on the peer.

        Returns
        -------
        DeliveryReceipt
            Detail ``"C-STORE status 0x0000 (success) from AE@host:port for
            SOPInstanceUID <uid>"``; warnings
            (0xB000, 0xB006, 0xB007) count as delivered and are named in the detail.

        Raises
        ------
        DeliveryError
            Retryable when the peer cannot be reached, rejects or aborts the
            association, times out or answers out-of-resources; not retryable when
            the file is missing or unreadable, the peer does not accept the SOP class,
            or it answers a failure status such as 0xA9xx or 0xCxxx.
        """
        dataset = self._read_dataset(item)
        sop_class = str(dataset.SOPClassUID)
        ae = self._application_entity(sop_class)
        assoc = self._associate(ae)
        try:
            try:
                response = assoc.send_c_store(dataset)
            except ValueError as exc:
                # No accepted presentation context for this SOP class.
                raise DeliveryError(
                    f"dicom: {self.peer} accepted no presentation context for SOP class "
                    f"{sop_class} ({exc})",
                    retryable=False,
                ) from exc
            except (OSError, RuntimeError) as exc:
                raise DeliveryError(
                    f"dicom: sending to {self.peer} failed: {exc}", retryable=True
                ) from exc
            return self._interpret(response, item, assoc, str(dataset.SOPInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()

    def _read_dataset(self, item: DeliveryItem) -> Dataset:
        path = item.files.get("dicom")
        if path is None:
            raise DeliveryError(
                f"dicom: job {item.job_id} has no DICOM waveform to send", retryable=False
            )
        try:
            dataset = dcmread(Path(path))
        except (OSError, InvalidDicomError) as exc:
            raise DeliveryError(
                f"dicom: job {item.job_id}: cannot read {Path(path).name}: {exc}",
                retryable=False,
            ) from exc
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in SENDABLE_SOP_CLASSES:
            raise DeliveryError(
                f"dicom: job {item.job_id}: {Path(path).name} has SOP class "
                f"{sop_class or 'none'}, not an ECG waveform storage class",
                retryable=False,
            )
        return dataset

    def _application_entity(self, sop_class: str) -> AE:
        ae = AE(ae_title=self.settings.calling_ae_title)
        ae.add_requested_context(sop_class, list(PROPOSED_TRANSFER_SYNTAXES))
        timeout = self.settings.timeout_s
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.connection_timeout = timeout
        return ae

    def _associate(self, ae: AE) -> Association:
        s = self.settings
        tls_args = (self._tls_context, s.host) if self._tls_context is not None else None
        connected = threading.Event()
        assoc = ae.associate(
            s.host,
            s.port,
            ae_title=s.ae_title,
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.set())],
        )
        if assoc.is_established:
            return assoc
        if not connected.is_set():
            raise DeliveryError(
                f"dicom: cannot connect to {self.peer} (connection refused, host "
                f"unreachable or no answer within {s.timeout_s:g} s)",
                retryable=True,
            )
        if assoc.is_rejected:
            reason = _rejection_text(assoc)
            raise DeliveryError(
                f"dicom: {self.peer} rejected the association from "
                f"{s.calling_ae_title} ({reason})",
                retryable=True,
            )
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            refused = ", ".join(sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts}))
            raise DeliveryError(
                f"dicom: {self.peer} accepted no presentation context for SOP class {refused} "
                f"with {' or '.join(str(ts.name) for ts in PROPOSED_TRANSFER_SYNTAXES)}",
                retryable=False,
            )
        raise DeliveryError(
            f"dicom: association with {self.peer} failed after connecting (aborted, "
            f"TLS handshake failed or no answer within {s.timeout_s:g} s)",
            retryable=True,
        )

    def _interpret(
        self, response: Dataset, item: DeliveryItem, assoc: Association, sop_instance: str
    ) -> DeliveryReceipt:
        status = response.get("Status") if response is not None else None
        if status is None:
            state = "aborted" if assoc.is_aborted else "gave no answer"
            raise DeliveryError(
                f"dicom: C-STORE to {self.peer} {state} (no response within "
                f"{self.settings.timeout_s:g} s or connection lost)",
                retryable=True,
            )
        status = int(status)
        text = describe_status(status)
        if status == STATUS_SUCCESS or status in WARNING_STATUSES or status & 0xF000 == 0xB000:
            log.info("job %s stored on %s: %s", item.job_id, self.peer, text)
            return DeliveryReceipt(
                self.name,
                f"C-STORE status {text} from {self.peer} for SOPInstanceUID {sop_instance}",
            )
        comment = response.get("ErrorComment")
        detail = f": {comment}" if comment else ""
        raise DeliveryError(
            f"dicom: {self.peer} answered C-STORE status {text}{detail}",
            retryable=is_retryable_status(status),
        )


def _rejection_text(assoc: Association) -> str:
    """Describe an A-ASSOCIATE-RJ (result, source, reason) in words."""
    primitive = assoc.acceptor.primitive
    if primitive is None:
        return "no reason given"
    result = {1: "permanent", 2: "transient"}.get(primitive.result or 0, "unknown")
    reasons = {
        (1, 1): "no reason given",
        (1, 2): "application context name not supported",
        (1, 3): "calling AE title not recognised",
        (1, 7): "called AE title not recognised",
        (2, 1): "no reason given",
        (2, 2): "protocol version not supported",
        (3, 1): "temporary congestion",
        (3, 2): "local limit exceeded",
    }
    reason = reasons.get(
        (primitive.result_source or 0, primitive.diagnostic or 0),
        f"source {primitive.result_source}, reason {primitive.diagnostic}",
    )
    return f"{result}: {reason}"
