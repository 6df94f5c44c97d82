"""Build the configured destinations from their settings."""

from __future__ import annotations

from ecgbridge.deliver.base import Destination
from ecgbridge.deliver.settings import (
    DicomDestinationSettings,
    FhirDestinationSettings,
    OutboxSettings,
)


def build_destinations(
    outbox: OutboxSettings | None = None,
    dicom: DicomDestinationSettings | None = None,
    fhir: FhirDestinationSettings | None = None,
) -> list[Destination]:
    """Return one destination per enabled setting, in the order outbox, DICOM, FHIR.

    Parameters
    ----------
    outbox : OutboxSettings, optional
        Outbox folder settings; skipped when None or disabled.
    dicom : DicomDestinationSettings, optional
        DICOM C-STORE peer; skipped when None or disabled.
    fhir : FhirDestinationSettings, optional
        FHIR server; skipped when None or disabled.

    Returns
    -------
    list of Destination
        Named ``"outbox"``, ``"dicom"`` and ``"fhir"``.
    """
    destinations: list[Destination] = []
    if outbox is not None and outbox.enabled:
        from ecgbridge.deliver.outbox import OutboxDestination

        destinations.append(OutboxDestination(outbox))
    if dicom is not None and dicom.enabled:
        from ecgbridge.deliver.dicom_store import DicomStoreDestination

        destinations.append(DicomStoreDestination(dicom))
    if fhir is not None and fhir.enabled:
        from ecgbridge.deliver.fhir_client import FhirDestination

        destinations.append(FhirDestination(fhir))
    return destinations
