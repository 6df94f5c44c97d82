"""The version of ecgbridge (one place; the package, the CLI and the encoders read it)."""

__version__ = "0.1.0"
