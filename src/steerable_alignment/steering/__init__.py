"""Steering with the trained artefacts: a user's few choices condition the models.

Framework-free (never imports Kedro). ``steerable_alignment.steer`` is the
entry point on top of it, with the Kedro layer (docs/steer.md).

- :mod:`.inputs`: the JSON Lines files (context pairs, candidates, prompts,
  a pool of pairs to ask about),
  checked with errors that name the file, line and field;
- :mod:`.core`: embedding the context as the ``embedding`` pipeline does,
  NP-BTL rewards of candidates, the pool pairs most worth asking next,
  NP-DPO generation conditioned on the context;
- :mod:`.report`: the text table and the JSON output;
- :mod:`.cli`: the command line's arguments and their checks;
- :mod:`.commands`: score / suggest / generate on a project given as a
  :class:`~.commands.Project` (``steerable_alignment.steer`` builds it from
  Kedro): which artefacts each needs, loading and checking them.

This package imports only the torch-free parts; import :mod:`.core` and
:mod:`.report` where the models are used.
"""

from steerable_alignment.steering.errors import (
    ContextTooLongError,
    InputError,
    MissingArtifactError,
    SteeringError,
)
from steerable_alignment.steering.inputs import (
    Candidate,
    ContextPair,
    PoolPair,
    PromptRecord,
    Skipped,
    check_context_size,
    check_suggest_size,
    read_candidates,
    read_context,
    read_pool,
    read_prompts,
    usable_pool,
)

__all__ = [
    "Candidate",
    "ContextPair",
    "ContextTooLongError",
    "InputError",
    "MissingArtifactError",
    "PoolPair",
    "PromptRecord",
    "Skipped",
    "SteeringError",
    "check_context_size",
    "check_suggest_size",
    "read_candidates",
    "read_context",
    "read_pool",
    "read_prompts",
    "usable_pool",
]
