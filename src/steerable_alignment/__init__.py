"""steerable-alignment: few-shot steerable alignment with neural-process preference models."""

__version__ = "0.1.0"
