"""What every destination receives and returns.

The daemon encodes a digitized ECG once into files in the job's work folder and
hands a :class:`DeliveryItem` to each destination. A destination either returns a
:class:`DeliveryReceipt` or raises :class:`ecgbridge.errors.DeliveryError` with
``retryable`` telling the job journal whether to try again later (server down,
5xx, DICOM out-of-resources) or to dead-letter the job (4xx, DICOM refusal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class DeliveryItem:
    """One digitized input, encoded and ready to send.

    Attributes
    ----------
    job_id : str
        Stable identifier of the job (also the file stem in the outbox).
    files : Mapping[str, Path]
        Encoded artifacts by format name: ``"dicom"`` (``.dcm``), ``"fhir-r4"``,
        ``"fhir-r5"`` (``.json``), ``"json"`` (summary), ``"wfdb"`` (``.hea``; the
        ``.dat`` lies beside it), ``"csv"``, ``"overlay"``.
    sop_instance_uid : str
        SOPInstanceUID of the DICOM waveform ("" if none was made).
    input_name : str
        Name of the received file (may be patient data: for opt-in file naming only).
    received_at : float
        When the input was received (Unix time; 0 if unknown).
    """

    job_id: str
    files: Mapping[str, Path] = field(default_factory=dict)
    sop_instance_uid: str = ""
    input_name: str = ""
    received_at: float = 0.0


@dataclass(frozen=True)
class DeliveryReceipt:
    """Proof of delivery, recorded in the job journal.

    Attributes
    ----------
    destination : str
        Name of the destination.
    detail : str
        What the peer answered (e.g. ``"C-STORE status 0x0000"``,
        ``"201 Observation/123"``, the path written).
    """

    destination: str
    detail: str = ""


class Destination(Protocol):
    """A place digitized ECGs are delivered to."""

    #: Unique name used in the journal and logs (e.g. ``"outbox"``, ``"pacs"``, ``"fhir"``).
    name: str

    def deliver(self, item: DeliveryItem) -> DeliveryReceipt:
        """Deliver one item; raise DeliveryError(retryable=...) on failure."""
        ...
