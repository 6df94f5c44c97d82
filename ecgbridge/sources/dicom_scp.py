"""The DICOM Storage SCP: receives ECG printouts as DICOM objects.

Accepted SOP classes (with their usual transfer syntaxes, JPEG included):
Secondary Capture (single and multi-frame), Encapsulated PDF and VL
Photographic Image, plus Verification (C-ECHO). Any other SOP class is not
negotiated (the association rejects that presentation context), and a C-STORE
of a class outside the list is answered 0x0122 "SOP class not supported".

Each C-STORE data set is written to a file in ``state/inputs/`` while it arrives
(:mod:`ecgbridge.sources.spool`: never whole in memory); the handler only makes that
file durable (fsynced, renamed, folder fsynced) and records the job; digitization happens later
in the worker pool, never on the association's thread. Nothing is acknowledged
before it is on disk.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ecgbridge import codes
from ecgbridge.config import DicomScpSettings
from ecgbridge.jobs.diskfull import is_disk_full
from ecgbridge.jobs.intake import Intake
from ecgbridge.sources.scp_guard import GuardedAssociationSocket, GuardedServer, GuardLimits
from ecgbridge.sources.spool import (
    discard,
    spool_error,
    spool_into,
    spooled_path,
    stop_spooling,
)

log = logging.getLogger("ecgbridge.sources.dicom_scp")

#: SOP classes the SCP stores.
ACCEPTED_SOP_CLASSES: tuple[str, ...] = codes.PAGE_SOP_CLASSES

STATUS_SUCCESS = 0x0000
#: Refused: SOP class not supported.
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Refused: out of resources (the object could not be stored).
STATUS_OUT_OF_RESOURCES = 0xA700
#: Error: cannot understand (no SOP Instance UID).
STATUS_CANNOT_UNDERSTAND = 0xC000
#: Error: data set does not match SOP class (SOP class differs from the context's).
STATUS_SOP_CLASS_MISMATCH = 0xA900

#: Refusal kinds of objects (the ``reason`` label of the refused-objects metric).
REFUSED_SOP_CLASS = "sop_class_not_supported"
REFUSED_CONTEXT_MISMATCH = "sop_class_differs_from_context"
REFUSED_TOO_LARGE = "object_too_large"
REFUSED_NO_UID = "no_sop_instance_uid"
REFUSED_NOT_STORED = "not_stored"

#: How long pynetdicom's per-association network loop sleeps when idle (its default
#: is 1 ms, which caps a single association near 400 small objects/s; 0.1 ms
#: lifts that ceiling at the price of more wake-ups while an association is open).
DUL_IDLE_SLEEP_SECONDS = 0.0001


def _printable(uid: str) -> str:
    """A received UID as safe, short text (bytes or control characters escaped)."""
    text = uid.encode("ascii", "backslashreplace").decode("ascii")
    return repr(text[:70]) if text.isprintable() else ascii(text[:70])


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
    on_refused : callable, optional
        Called with ``(what, reason)`` for every refused connection (``what`` is
        ``"connection"``) or object (``"object"``); metrics.
    log_patient_ids : bool
        Also log the Patient ID of each received object (off by default: logs then
        carry only the job id and SOP Instance UID).
    """

    def __init__(
        self,
        settings: DicomScpSettings,
        intake: Intake,
        on_store: Callable[[int], None] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        *,
        log_patient_ids: bool = False,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.on_store = on_store
        self.on_refused = on_refused
        self.log_patient_ids = log_patient_ids
        self._server: GuardedServer | None = None

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
        # the guard enforces max_associations before pynetdicom sees an association
        ae.maximum_associations = s.max_associations + s.max_pending_connections
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
        server = ae.make_server(
            (s.host, s.port), evt_handlers=handlers, ssl_context=build_ssl_context(s),
            server_class=GuardedServer,
        )
        assert isinstance(server, GuardedServer)
        spool_into(self.intake.state.inputs)  # received data sets go to disk as they arrive
        server.configure(self.limits(), lambda kind: self._refused("connection", kind))
        threading.Thread(target=server.serve_forever, name="ecgbridge-scp", daemon=True).start()
        ae._servers.append(server)
        self._server = server
        log.info("DICOM Storage SCP %s listening on %s:%d%s", s.ae_title, s.host, self.port,
                 " (TLS)" if s.tls.enabled else "")

    def limits(self) -> GuardLimits:
        """The admission limits of the settings."""
        s = self.settings
        return GuardLimits(
            setup_timeout=s.setup_timeout, max_pending=s.max_pending_connections,
            max_associations=s.max_associations, max_per_peer=s.max_associations_per_peer,
            network_timeout=s.network_timeout, max_object_bytes=int(s.max_object_mb * 2**20),
        )

    def load(self) -> dict[str, int]:
        """Connections being set up and associations open now."""
        server = self._server
        if server is None:
            return {"pending": 0, "associations": 0}
        return {"pending": server.pending, "associations": server.established()}

    def saturated(self, within: float = 30.0) -> str | None:
        """Why the SCP is (or was, within `within` seconds) full, or None."""
        server = self._server
        if server is None:
            return None
        load = self.load()
        if load["associations"] >= self.settings.max_associations:
            return f"all {self.settings.max_associations} DICOM associations in use"
        if server.last_saturated and time.monotonic() - server.last_saturated < within:
            return "DICOM connections were refused for lack of capacity"
        return None

    def stop(self) -> None:
        """Stop accepting associations and close the listener."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            stop_spooling()

    def handle_connection(self, event: evt.Event) -> None:
        """A peer connected: make its association's network loop more responsive."""
        dul = getattr(event.assoc, "dul", None)
        if dul is not None and hasattr(dul, "_run_loop_delay"):
            dul._run_loop_delay = DUL_IDLE_SLEEP_SECONDS

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO: Success; a C-STORE routed here (Verification SOP class) aborts."""
        if not isinstance(event.request, C_ECHO) or event.context.abstract_syntax != Verification:
            discard(event.request)
            self._refused("object", REFUSED_CONTEXT_MISMATCH,
                          "a C-STORE named the Verification SOP class; association aborted",
                          event)
            event.assoc.abort()
        return STATUS_SUCCESS

    def handle_store(self, event: evt.Event) -> int:
        """C-STORE: write the object durably, journal it, then answer Success."""
        request: Any = event.request
        sock = getattr(event.assoc.dul, "socket", None)
        if isinstance(sock, GuardedAssociationSocket) and sock.pop_too_large():
            limit = self.settings.max_object_mb
            return self._refuse_object(STATUS_OUT_OF_RESOURCES, REFUSED_TOO_LARGE,
                                       f"object larger than dicom.max_object_mb ({limit:g} MB)",
                                       event)
        sop_class = str(request.AffectedSOPClassUID or "")
        if sop_class not in ACCEPTED_SOP_CLASSES:
            return self._refuse_object(STATUS_SOP_CLASS_NOT_SUPPORTED, REFUSED_SOP_CLASS,
                                       f"SOP class {_printable(sop_class)} is not accepted", event)
        if sop_class != str(event.context.abstract_syntax):
            return self._refuse_object(
                STATUS_SOP_CLASS_MISMATCH, REFUSED_CONTEXT_MISMATCH,
                f"SOP class {sop_class} sent on a {event.context.abstract_syntax} context", event)
        uid = str(request.AffectedSOPInstanceUID or "").strip()
        if not uid:
            return self._refuse_object(STATUS_CANNOT_UNDERSTAND, REFUSED_NO_UID,
                                       "no SOP Instance UID", event)
        patient_id = self._patient_id(event) if self.log_patient_ids else None
        try:
            failed = spool_error(request)
            if failed is not None:
                raise failed
            spooled = spooled_path(request)
            if spooled is not None:
                result = self.intake.take_dicom_file(spooled, uid)
            else:
                result = self.intake.take_dicom_bytes(encoded_parts(event), uid)
        except OSError as exc:
            return self._refuse_object(STATUS_OUT_OF_RESOURCES, REFUSED_NOT_STORED,
                                       f"cannot be stored: {exc.strerror or exc}", event)
        except Exception as exc:
            if is_disk_full(exc):  # the journal's disk: the sender may try again later
                return self._refuse_object(STATUS_OUT_OF_RESOURCES, REFUSED_NOT_STORED,
                                           "cannot be stored: no space left on device", event)
            log.exception("unexpected error while storing a received object")
            return self._answer(STATUS_OUT_OF_RESOURCES)
        context = {"job_id": result.job_id, "sop_instance_uid": uid,
                   "calling_aet": str(event.assoc.requestor.ae_title)}
        if patient_id is not None:
            context["patient_id"] = patient_id
        log.info("C-STORE stored" if result.created else "C-STORE duplicate", extra=context)
        return self._answer(STATUS_SUCCESS)

    @staticmethod
    def _patient_id(event: evt.Event) -> str:
        """The Patient ID of the received object (read before it is moved into place)."""
        try:
            path = spooled_path(event.request)
            if path is not None:
                import pydicom

                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
                return str(ds.get("PatientID", ""))
            return str(event.dataset.get("PatientID", ""))
        except Exception:  # undecodable dataset: the digitizer will report it
            return ""

    def _refuse_object(self, status: int, kind: str, detail: str, event: evt.Event) -> int:
        self._refused("object", kind, detail, event)
        return self._answer(status)

    def _refused(
        self, what: str, kind: str, detail: str = "", event: evt.Event | None = None
    ) -> None:
        if self.on_refused is not None:
            self.on_refused(what, kind)
        if event is not None:
            log.warning("C-STORE refused: %s", detail,
                        extra={"reason": kind, "calling_aet": str(event.assoc.requestor.ae_title),
                               "peer": str(event.assoc.requestor.address)})

    def _answer(self, status: int) -> int:
        if self.on_store is not None:
            self.on_store(status)
        return status
