"""condavault: an on-premise conda package repository."""

__version__ = "0.1.0"
