"""Destinations: output folder, DICOM C-STORE SCU, FHIR REST client."""

from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt, Destination

__all__ = ["DeliveryItem", "DeliveryReceipt", "Destination"]
