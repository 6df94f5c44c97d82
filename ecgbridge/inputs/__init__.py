"""Reading inputs (image files, PDFs, DICOM objects) into pages; the only I/O before digitizing."""

from ecgbridge.inputs.load import load_input
from ecgbridge.inputs.page import LoadedInput, Page, TextItem, VectorPath

__all__ = ["LoadedInput", "Page", "TextItem", "VectorPath", "load_input"]
