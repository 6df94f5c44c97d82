"""Admission control of the DICOM Storage SCP against stalled or hostile peers.

pynetdicom starts an association (and counts it against its limit) as soon as a
TCP connection is accepted, performs the TLS handshake in the accept thread with
no timeout, and reads each PDU with a blocking ``recv`` that no ACSE or DIMSE
timeout covers. :class:`GuardedServer` moves the association set-up in front of
pynetdicom:

1. in the accept thread, a connection is admitted only while fewer than
   ``max_pending`` connections are being set up and the peer holds fewer than
   ``max_per_peer`` connections; otherwise it is closed at once;
2. in the connection's own thread, the TLS handshake and the complete
   A-ASSOCIATE-RQ PDU must arrive within ``setup_timeout`` seconds in total;
3. only then is the association handed to pynetdicom, after a check of the
   association limit (a full SCP answers A-ASSOCIATE-RJ "local limit exceeded").

After that, :class:`GuardedAssociationSocket` reads whole PDUs with a socket
timeout, refuses PDUs longer than the advertised maximum (A-ABORT) and strips the
data of a C-STORE once it exceeds ``max_object_bytes`` so that the handler can
answer "out of resources" without the object being held in memory.

Every refusal is counted through ``on_event(kind)`` and logged (peer address and
reason only, at most a few lines per reason every 10 seconds).
"""

from __future__ import annotations

import collections
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger("ecgbridge.sources.dicom_scp")

PDU_ASSOCIATE_RQ = 0x01
PDU_P_DATA = 0x04
#: Largest A-ASSOCIATE-RQ we read (hundreds of presentation contexts fit in 64 KiB).
MAX_ASSOCIATE_RQ_BYTES = 1 << 20
#: Largest non-P-DATA PDU after association (release, abort: a few bytes).
MAX_CONTROL_PDU_BYTES = 1 << 16
#: Ceiling on a P-DATA PDU when the advertised maximum is 0 (unlimited).
UNLIMITED_PDU_CAP = 64 << 20

#: A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local limit exceeded.
ASSOCIATE_RJ_LOCAL_LIMIT = b"\x03\x00" + struct.pack(">L", 4) + b"\x00\x02\x03\x02"
#: A-ABORT from the service provider, reason not specified.
A_ABORT_PROVIDER = b"\x07\x00" + struct.pack(">L", 4) + b"\x00\x00\x02\x00"

#: Event kinds reported to ``on_event`` (the ``reason`` label of the metric).
SETUP_TIMEOUT = "setup_timeout"
TLS_FAILED = "tls_failed"
NOT_AN_ASSOCIATION = "not_an_association"
TOO_MANY_PENDING = "too_many_pending"
TOO_MANY_ASSOCIATIONS = "too_many_associations"
PEER_LIMIT = "peer_limit"
PDU_TOO_LARGE = "pdu_too_large"
NETWORK_TIMEOUT = "network_timeout"
#: Kinds meaning the SCP was full (``/healthz`` reports it saturated for a while).
SATURATION_KINDS = frozenset({TOO_MANY_PENDING, TOO_MANY_ASSOCIATIONS, PEER_LIMIT})

_LOG_WINDOW_SECONDS = 10.0
_LOG_PER_WINDOW = 5


@dataclass(frozen=True)
class GuardLimits:
    """Limits of the association set-up and of the PDUs read afterwards."""

    setup_timeout: float
    max_pending: int
    max_associations: int
    max_per_peer: int
    network_timeout: float
    max_object_bytes: int


class _RateLimitedLog:
    """At most a few warnings per reason and window; the rest are summed up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def warn(self, kind: str, message: str, *args: Any, **extra: Any) -> None:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(kind, (now, 0))
            if now - start > _LOG_WINDOW_SECONDS:
                if count > _LOG_PER_WINDOW:
                    log.warning("%d more DICOM connection(s) refused (%s) in %.0f s",
                                count - _LOG_PER_WINDOW, kind, now - start,
                                extra={"reason": kind})
                start, count = now, 0
            count += 1
            self._windows[kind] = (start, count)
        if count <= _LOG_PER_WINDOW:
            log.warning(message, *args, extra={"reason": kind, **extra})


class _SetupRefusedError(Exception):
    """The association set-up failed; ``kind`` says why (an event kind)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    """`n` bytes from `sock`, each wait bounded by `deadline` (monotonic) if given."""
    chunks = bytearray()
    while len(chunks) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            sock.settimeout(left)
        data = sock.recv(min(65536, n - len(chunks)))
        if not data:
            raise ConnectionError("peer closed the connection")
        chunks += data
    return bytes(chunks)


class GuardedAssociationSocket(AssociationSocket):
    """An association socket that reads whole, size-checked PDUs.

    Serves the already-read A-ASSOCIATE-RQ first, then reads one PDU at a time
    (the socket timeout bounds a stalled PDU), aborts on an over-long PDU and
    replaces the data of a C-STORE beyond ``max_object_bytes`` by empty fragments
    (:meth:`pop_too_large` then tells the C-STORE handler).
    """

    _buffer: bytearray
    _guard: GuardedServer
    _peer: str
    _message_bytes: int
    _finished: collections.deque[bool]

    @classmethod
    def adopt(
        cls, plain: AssociationSocket, prefix: bytes, guard: GuardedServer, peer: str
    ) -> GuardedAssociationSocket:
        """Take over the state of pynetdicom's freshly made `plain` socket."""
        sock = cls.__new__(cls)
        sock.__dict__.update(plain.__dict__)
        sock._buffer = bytearray(prefix)
        sock._guard = guard
        sock._peer = peer
        sock._message_bytes = 0
        sock._finished = collections.deque()
        return sock

    @property
    def ready(self) -> bool:
        """True when buffered or network data can be read."""
        return bool(self._buffer) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """Up to `nr_bytes` from the buffer, reading whole PDUs as needed."""
        out = bytearray()
        while len(out) < nr_bytes:
            if not self._buffer and not self._read_pdu():
                break
            take = self._buffer[: nr_bytes - len(out)]
            del self._buffer[: len(take)]
            out += take
        return out

    def _read_pdu(self) -> bool:
        raw = self.socket
        if raw is None:
            return False
        try:
            header = _recv_exact(raw, 6, None)
            pdu_type, _, length = struct.unpack(">BBL", header)
            limit = self._limit(pdu_type)
            if length > limit:
                self._guard.refuse(PDU_TOO_LARGE, self._peer,
                                   f"PDU of {length} bytes exceeds the maximum of {limit}")
                self._abort()
                return False
            body = _recv_exact(raw, length, None)
        except TimeoutError:
            self._guard.refuse(NETWORK_TIMEOUT, self._peer, "peer stalled in the middle of a PDU")
            self._abort()
            return False
        except (OSError, ConnectionError, ValueError):
            return False
        if pdu_type == PDU_P_DATA:
            body = self._police_p_data(body)
            header = header[:2] + struct.pack(">L", len(body))
        self._buffer += header + body
        return True

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == PDU_P_DATA:
            advertised = int(self.assoc.acceptor.maximum_length or 0)
            return advertised + 6 if advertised > 0 else UNLIMITED_PDU_CAP
        if pdu_type == PDU_ASSOCIATE_RQ:
            return MAX_ASSOCIATE_RQ_BYTES
        return MAX_CONTROL_PDU_BYTES

    def _police_p_data(self, body: bytes) -> bytes:
        """Count dataset bytes of the current message; empty them past the limit."""
        out = bytearray()
        pos = 0
        limit = self._guard.limits.max_object_bytes
        while pos + 6 <= len(body):
            (item_len,) = struct.unpack(">L", body[pos: pos + 4])
            item = body[pos + 4: pos + 4 + item_len]
            pos += 4 + item_len
            if len(item) >= 2 and not item[1] & 0x01:  # a dataset fragment
                self._message_bytes += len(item) - 2
                if self._message_bytes > limit:
                    item = item[:2]
                if item[1] & 0x02:  # its last fragment
                    self._finished.append(self._message_bytes > limit)
                    self._message_bytes = 0
            out += struct.pack(">L", len(item)) + item
        return bytes(out + body[pos:])

    def pop_too_large(self) -> bool:
        """Whether the oldest completed dataset not yet handled exceeded the limit."""
        return self._finished.popleft() if self._finished else False

    def _abort(self) -> None:
        try:
            if self.socket is not None:
                self.socket.settimeout(1.0)
                self.socket.sendall(A_ABORT_PROVIDER)
        except OSError:
            pass


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, given a socket whose A-ASSOCIATE-RQ was read."""

    def __init__(self, request: Any, client_address: Any, server: Any, prefix: bytes) -> None:
        self._prefix = prefix
        super().__init__(request, client_address, server)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        plain = assoc.dul.socket
        assert plain is not None and isinstance(self.server, GuardedServer)
        assoc.dul.socket = GuardedAssociationSocket.adopt(
            plain, self._prefix, self.server, str(self.client_address[0])
        )
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """A threaded association server that sets up associations under limits.

    Attributes
    ----------
    limits : GuardLimits
        Set by :meth:`configure` before serving.
    on_event : callable
        Called with the event kind of every refusal (metrics).
    """

    daemon_threads = True
    limits: GuardLimits
    on_event: Callable[[str], None]

    def configure(self, limits: GuardLimits, on_event: Callable[[str], None]) -> None:
        """Install the limits and the refusal callback."""
        self.limits = limits
        self.on_event = on_event
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._rate_log = _RateLimitedLog()
        self.last_saturated = 0.0

    # ----------------------------------------------------------- accounting
    @property
    def pending(self) -> int:
        """Connections being set up now (TLS handshake or A-ASSOCIATE-RQ)."""
        with self._lock:
            return sum(self._pending.values())

    def established(self, peer: str | None = None) -> int:
        """Associations handed to pynetdicom and still running (of `peer` if given)."""
        out = 0
        for assoc in self.ae.active_associations:
            if not assoc.is_acceptor:
                continue
            if peer is None or str(assoc.requestor.address) == peer:
                out += 1
        return out

    def refuse(self, kind: str, peer: str, detail: str) -> None:
        """Count and log a refusal (no patient data: peer address and reason)."""
        if kind in SATURATION_KINDS:
            self.last_saturated = time.monotonic()
        try:
            self.on_event(kind)
        finally:
            self._rate_log.warn(kind, "DICOM connection from %s refused: %s", peer, detail,
                                peer=peer)

    # ------------------------------------------------------- socketserver
    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: the TLS handshake happens in the connection's thread."""
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection while set-up slots and the peer's share are free."""
        peer = str(client_address[0])
        with self._lock:
            pending = sum(self._pending.values())
            mine = self._pending.get(peer, 0)
            if pending >= self.limits.max_pending:
                kind, detail = TOO_MANY_PENDING, f"{pending} connections already being set up"
            elif mine + self.established(peer) >= self.limits.max_per_peer:
                kind, detail = PEER_LIMIT, f"peer holds {self.limits.max_per_peer} connections"
            else:
                self._pending[peer] = mine + 1
                return True
        self.refuse(kind, peer, detail)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Set the association up under the deadline, then hand it to pynetdicom."""
        peer = str(client_address[0])
        sock: Any = request
        try:
            try:
                sock, prefix = self._set_up(request, peer)
            finally:
                with self._lock:
                    left = self._pending.get(peer, 1) - 1
                    if left > 0:
                        self._pending[peer] = left
                    else:
                        self._pending.pop(peer, None)
            if self.established() >= self.limits.max_associations:
                self.refuse(TOO_MANY_ASSOCIATIONS, peer,
                            f"{self.limits.max_associations} associations already open")
                sock.sendall(ASSOCIATE_RJ_LOCAL_LIMIT)
                self.shutdown_request(sock)
                return
            sock.settimeout(self.limits.network_timeout)
            GuardedRequestHandler(sock, client_address, self, prefix)
        except _SetupRefusedError as exc:
            self.refuse(exc.kind, peer, str(exc))
            self.shutdown_request(sock)
        except Exception as exc:  # a connection's failure must not end the server
            log.warning("DICOM connection from %s ended: %s", peer, type(exc).__name__)
            self.shutdown_request(sock)

    def _set_up(self, raw: socket.socket, peer: str) -> tuple[Any, bytes]:
        deadline = time.monotonic() + self.limits.setup_timeout
        sock: Any = raw
        if self.ssl_context is not None:
            raw.settimeout(self.limits.setup_timeout)
            try:
                sock = self.ssl_context.wrap_socket(
                    raw, server_side=True, do_handshake_on_connect=False
                )
                sock.do_handshake()
            except TimeoutError as exc:
                raise _SetupRefusedError(SETUP_TIMEOUT, "no TLS handshake in time") from exc
            except OSError as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                raise _SetupRefusedError(TLS_FAILED, f"TLS handshake failed ({reason})") from exc
        try:
            header = _recv_exact(sock, 6, deadline)
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type != PDU_ASSOCIATE_RQ or length > MAX_ASSOCIATE_RQ_BYTES:
                raise _SetupRefusedError(NOT_AN_ASSOCIATION,
                                    f"first PDU is not an A-ASSOCIATE-RQ (type 0x{pdu_type:02X})")
            body = _recv_exact(sock, length, deadline)
        except TimeoutError as exc:
            raise _SetupRefusedError(
                SETUP_TIMEOUT,
                f"no complete A-ASSOCIATE-RQ within {self.limits.setup_timeout:g} s",
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise _SetupRefusedError(
                NOT_AN_ASSOCIATION, "closed before a complete A-ASSOCIATE-RQ"
            ) from exc
        return sock, header + body

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection in one line (socketserver prints a traceback)."""
        log.warning("DICOM connection from %s ended with an error", client_address[0])
