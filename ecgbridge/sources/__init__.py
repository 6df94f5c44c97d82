"""Where the daemon's inputs come from: the inbox folder and the DICOM Storage SCP."""
