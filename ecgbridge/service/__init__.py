"""The ``ecgbridge serve`` daemon: composition, health/metrics HTTP, logging."""
