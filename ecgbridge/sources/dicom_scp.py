"""The DICOM Storage SCP: receives ECG printouts as DICOM objects.

Accepted SOP classes (with their usual transfer syntaxes, JPEG included):
Secondary Capture (single and multi-frame), Encapsulated PDF and VL
Photographic Image, plus Verification (C-ECHO). Any other SOP class is not
negotiated (the association rejects that presentation context), and a C-STORE
of a class outside the list is answered 0x0122 "SOP class not supported".

The C-STORE handler only writes the received bytes durably (file and directory
fsynced) into the state folder and records the job; digitization happens later
in the worker pool, never on the association's thread. Nothing is acknowledged
before it is on disk.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from ecgbridge.config import DicomScpSettings
from ecgbridge.jobs.intake import Intake

log = logging.getLogger("ecgbridge.sources.dicom_scp")

SECONDARY_CAPTURE_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_SINGLE_BIT_SC = "1.2.840.10008.5.1.4.1.1.7.1"
MULTIFRAME_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
MULTIFRAME_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
VL_PHOTOGRAPHIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"

#: SOP classes the SCP stores.
ACCEPTED_SOP_CLASSES: tuple[str, ...] = (
    SECONDARY_CAPTURE_IMAGE,
    MULTIFRAME_SINGLE_BIT_SC,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    MULTIFRAME_TRUE_COLOR_SC,
    ENCAPSULATED_PDF,
    VL_PHOTOGRAPHIC_IMAGE,
)

STATUS_SUCCESS = 0x0000
#: Refused: SOP class not supported.
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Refused: out of resources (the object could not be stored).
STATUS_OUT_OF_RESOURCES = 0xA700
#: Error: cannot understand (no SOP Instance UID).
STATUS_CANNOT_UNDERSTAND = 0xC000

#: How long pynetdicom's per-association network loop sleeps when idle (its default
#: is 1 ms, which caps a single association near 400 small objects/s; 0.1 ms
#: lifts that ceiling at the price of more wake-ups while an association is open).
DUL_IDLE_SLEEP_SECONDS = 0.0001


def encoded_parts(event: evt.Event) -> list[Any]:
    """The received object in the DICOM file format, as (header, dataset) buffers.

    The dataset is a view of pynetdicom's receive buffer: nothing is decoded and the
    (possibly large) pixel data is not copied on its way to the file.
    """
    try:
        body = event.request.DataSet.getbuffer()  # type: ignore[union-attr]
        header = b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta)
    except (AttributeError, TypeError):
        return [event.encoded_dataset(include_meta=True)]
    return [header, body]


def build_ssl_context(settings: DicomScpSettings) -> ssl.SSLContext | None:
    """The server TLS context of the SCP, or None when TLS is off (TLS 1.2 minimum)."""
    tls = settings.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    if tls.ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return ctx


class StorageScp:
    """A pynetdicom Storage SCP that turns received objects into jobs.

    Parameters
    ----------
    settings : DicomScpSettings
        Bind address, port, AE title, allow-list, timeouts, TLS.
    intake : Intake
        Stores each object durably and journals it.
    on_store : callable, optional
        Called with the status of every C-STORE (metrics).
    log_patient_ids : bool
        Also log the Patient ID of each received object (off by default: logs then
        carry only the job id and SOP Instance UID).
    """

    def __init__(
        self,
        settings: DicomScpSettings,
        intake: Intake,
        on_store: Callable[[int], None] | None = None,
        *,
        log_patient_ids: bool = False,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.on_store = on_store
        self.log_patient_ids = log_patient_ids
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    @property
    def alive(self) -> bool:
        """True while the listener accepts associations."""
        server = self._server
        sock = server.socket if server is not None else None
        return sock is not None and sock.fileno() >= 0

    def build_ae(self) -> AE:
        """The application entity with the accepted presentation contexts."""
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        for uid in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.require_called_aet = s.require_called_aet
        if s.require_calling_aet:
            ae.require_calling_aet = list(s.require_calling_aet)
        return ae

    def start(self) -> None:
        """Bind and serve in background threads."""
        s = self.settings
        ae = self.build_ae()
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_CONN_OPEN, self.handle_connection),
        ]
        self._server = ae.start_server(
            (s.host, s.port), block=False, evt_handlers=handlers,
            ssl_context=build_ssl_context(s),
        )
        log.info("DICOM Storage SCP %s listening on %s:%d%s", s.ae_title, s.host, self.port,
                 " (TLS)" if s.tls.enabled else "")

    def stop(self) -> None:
        """Stop accepting associations and close the listener."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def handle_connection(self, event: evt.Event) -> None:
        """A peer connected: make its association's network loop more responsive."""
        dul = getattr(event.assoc, "dul", None)
        if dul is not None and hasattr(dul, "_run_loop_delay"):
            dul._run_loop_delay = DUL_IDLE_SLEEP_SECONDS

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO: always Success."""
        return STATUS_SUCCESS

    def handle_store(self, event: evt.Event) -> int:
        """C-STORE: write the object durably, journal it, then answer Success."""
        request: Any = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        if sop_class not in ACCEPTED_SOP_CLASSES:
            return self._answer(STATUS_SOP_CLASS_NOT_SUPPORTED)
        uid = str(request.AffectedSOPInstanceUID or "").strip()
        if not uid:
            return self._answer(STATUS_CANNOT_UNDERSTAND)
        try:
            result = self.intake.take_dicom_bytes(encoded_parts(event), uid)
        except OSError as exc:
            log.error("cannot store a received object: %s", exc)
            return self._answer(STATUS_OUT_OF_RESOURCES)
        except Exception:
            log.exception("unexpected error while storing a received object")
            return self._answer(STATUS_OUT_OF_RESOURCES)
        context = {"job_id": result.job_id, "sop_instance_uid": uid,
                   "calling_aet": str(event.assoc.requestor.ae_title)}
        if self.log_patient_ids:
            try:
                context["patient_id"] = str(event.dataset.get("PatientID", ""))
            except Exception:  # undecodable dataset: the digitizer will report it
                context["patient_id"] = ""
        log.info("C-STORE stored" if result.created else "C-STORE duplicate", extra=context)
        return self._answer(STATUS_SUCCESS)

    def _answer(self, status: int) -> int:
        if self.on_store is not None:
            self.on_store(status)
        return status
