"""The ``steer`` command line: its arguments, their checks, and quiet logging.

Framework-free; ``steerable_alignment.steer`` parses with :func:`build_parser`
and runs :func:`steerable_alignment.steering.commands.run` (docs/steer.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROG = "python -m steerable_alignment.steer"


def _checked(cast: type, ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``cast`` the text, then refuse values where ``ok`` is false."""
    kind = "an integer" if cast is int else "a number"

    def parse(value: str) -> Any:
        try:
            number = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {value!r}") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return number

    return parse


INF = float("inf")
_positive_int = _checked(int, lambda n: n >= 1, "a positive integer")
_non_negative_int = _checked(int, lambda n: n >= 0, "an integer >= 0")
_temperature = _checked(float, lambda x: 0 <= x < INF, "a number >= 0")
_top_p = _checked(float, lambda x: 0 < x <= 1, "in (0, 1]")
_positive_float = _checked(float, lambda x: 0 < x < INF, "a number > 0")


def _device_name(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, and CUDA only where it exists."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{value!r}: CUDA is not available here")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/steer.md)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Condition the trained NP-BTL reward model or NP-DPO policy on a user's few "
            "choices: score candidate responses, answer prompts, or suggest which pairs to "
            "ask the user next."
        ),
        epilog="See docs/steer.md.",
    )
    parser.add_argument(
        "--context",
        required=True,
        type=Path,
        metavar="FILE",
        help="JSON Lines of the user's choices: prompt, response_a, response_b, choice "
        "(1 = response_b preferred, 0 = response_a); an empty file gives the population model",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--candidates",
        type=Path,
        metavar="FILE",
        help="JSON Lines of prompt, response: score each with the NP-BTL reward model, "
        "ranked per prompt",
    )
    mode.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="JSON Lines of prompt: answer each with the NP-DPO policy",
    )
    mode.add_argument(
        "--suggest",
        type=_positive_int,
        metavar="K",
        help="print the K pairs of --pool most worth asking the user next (NP-BTL reward model)",
    )
    parser.add_argument(
        "--pool",
        type=Path,
        metavar="FILE",
        help="--suggest: JSON Lines of prompt, response_a, response_b to choose from",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "random", "uncertainty", "information", "population"),
        help="--suggest: how to rank the pool (default auto: information for a latent model, "
        "else population)",
    )
    parser.add_argument("--dataset", default="hh", help="the data set of the models (default hh)")
    parser.add_argument(
        "--env", default="base", help="Kedro configuration environment (default base)"
    )
    parser.add_argument(
        "--project-path",
        default=None,
        help="the Kedro project, or a folder inside it (default: the current folder)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        type=_device_name,
        help="auto (CUDA if available; the embedding model keeps its parameter), cpu, cuda "
        "or cuda:N",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, default=64, help="--prompts: default 64"
    )
    parser.add_argument(
        "--temperature",
        type=_temperature,
        default=0.7,
        help="--prompts: 0 decodes greedily (default 0.7)",
    )
    parser.add_argument("--top-p", type=_top_p, default=0.9, help="--prompts: default 0.9")
    parser.add_argument(
        "--top-k", type=_non_negative_int, default=50, help="--prompts: 0 is off (default 50)"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=_positive_float,
        default=1.0,
        help="--prompts: 1.0 is off (default 1.0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="--prompts: sampling seed; --suggest: draws of z (0)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="--prompts: prompts per generate() call (8)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Kedro's and the models' log messages"
    )
    return parser


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Without ``--verbose``: warnings and errors only, no progress bars.

    Kedro configures its log handlers when imported and again when the
    project is bootstrapped, so INFO messages are switched off process-wide
    (``logging.disable``) rather than per logger; Kedro's warnings and the
    libraries' ``FutureWarning``s are hidden too. Restored on exit.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"kedro(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' API changes
            yield
    finally:
        logging.disable(logging.NOTSET)
