"""Destinations: output folder, DICOM C-STORE SCU, FHIR REST client."""

from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt, Destination
from ecgbridge.deliver.factory import build_destinations
from ecgbridge.deliver.settings import (
    DicomDestinationSettings,
    DicomTlsSettings,
    FhirDestinationSettings,
    OAuth2ClientCredentials,
    OutboxSettings,
    SmartBackendServices,
)

__all__ = [
    "DeliveryItem",
    "DeliveryReceipt",
    "Destination",
    "DicomDestinationSettings",
    "DicomTlsSettings",
    "FhirDestinationSettings",
    "OAuth2ClientCredentials",
    "OutboxSettings",
    "SmartBackendServices",
    "build_destinations",
]
