"""The one base class of the project's errors that carry a stable code."""
from __future__ import annotations


class CodedError(Exception):
    """An error with a stable, machine-readable ``code`` beside its human message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
