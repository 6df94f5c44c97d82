"""Reading inputs (image files, PDFs, DICOM objects) into pages; the only I/O before digitizing."""
