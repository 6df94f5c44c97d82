"""The digitization pipeline: pure functions from page pixels (or vector paths) to an ECG."""
