"""The expected failures of steering: bad input files, missing artefacts, over-long contexts.

The ``steer`` command prints their message (no traceback) and exits with a
non-zero status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SteeringError(ValueError):
    """An expected failure whose message tells the user what to change."""


class InputError(SteeringError):
    """A JSON Lines input file is unreadable or a record is invalid (file, line, field)."""


class ContextTooLongError(SteeringError):
    """A context has more pairs than the model saw during training."""


class MissingArtifactError(SteeringError):
    """A trained artefact the command needs does not exist yet."""
