"""Tensor-level episode sampling (DESIGN.md §3).

Everything works on index tensors: a split is a ``(P,)`` tensor of row
indices into the preference data, and an episode is a row of indices into
it. No pandas in here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerable_alignment.episodes.batch import EpisodeBatch
from steerable_alignment.episodes.sizes import check_evaluation_split


@dataclass(frozen=True)
class PreferenceData:
    """All pairs of a data set as tensors.

    Attributes:
        features: (P, 2, D) float option features, rows aligned with ``choices``.
        choices: (P, K) long, per objective, 1 = option b preferred.
        objectives: the K objective names, in column order of ``choices``.
    """

    features: torch.Tensor
    choices: torch.Tensor
    objectives: tuple[str, ...]

    def to(self, device: torch.device | str) -> PreferenceData:
        return PreferenceData(self.features.to(device), self.choices.to(device), self.objectives)

    def objective_ids(self, names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Column indices of the named objectives; unknown names raise ValueError."""
        unknown = [n for n in names if n not in self.objectives]
        if unknown:
            raise ValueError(
                f"Unknown objective(s) {unknown}; valid objectives: {list(self.objectives)}"
            )
        return torch.tensor([self.objectives.index(n) for n in names], dtype=torch.long)


def sample_distinct(
    population: int, shape: tuple[int, int], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform draws of ``shape[1]`` distinct integers in ``[0, population)`` per row.

    Rejection sampling: rows with a repeated value are redrawn, which keeps
    every row uniform over sets of distinct values and costs O(B·k) instead
    of the O(B·population) of a permutation per row. When collisions would be
    common (k² > population) it falls back to a random order per row.

    Returns:
        (B, k) long tensor on ``device``.
    """
    rows, k = shape
    if k > population:
        raise ValueError(f"cannot draw {k} distinct items from a population of {population}")
    if k * (k - 1) > population:
        # Collisions would be frequent: take the first k of a random order instead.
        keys = torch.rand((rows, population), generator=generator, device=device)
        return keys.argsort(dim=1)[:, :k]
    draws = torch.randint(population, shape, generator=generator, device=device)
    while True:
        ordered = draws.sort(dim=1).values
        bad = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)  # (B,)
        if not bool(bad.any()):
            return draws
        redraw = torch.randint(population, (int(bad.sum()), k), generator=generator, device=device)
        draws = draws.clone()
        draws[bad] = redraw


def _gather_batch(
    data: PreferenceData,
    context_rows: torch.Tensor,
    context_mask: torch.Tensor,
    target_rows: torch.Tensor,
    target_mask: torch.Tensor,
    objective: torch.Tensor,
) -> EpisodeBatch:
    """Gather features and the episode objective's choices for row-index tensors."""
    obj = objective.unsqueeze(1)  # (B, 1)
    return EpisodeBatch(
        context_features=data.features[context_rows],  # (B, N, 2, D)
        context_choices=data.choices[context_rows, obj],  # (B, N)
        context_mask=context_mask,
        target_features=data.features[target_rows],  # (B, T, 2, D)
        target_choices=data.choices[target_rows, obj],  # (B, T)
        target_mask=target_mask,
        objective=objective,
    )


@dataclass(frozen=True)
class TrainingEpisodes:
    """A batch of training episodes as row indices (context ⊆ targets).

    Attributes:
        rows: (B, T) long target rows; the first ``num_context[b]`` are the
            context of episode b.
        objective: (B,) long objective column of each episode's user.
        num_context: (B,) long context size of each episode.
    """

    rows: torch.Tensor
    objective: torch.Tensor
    num_context: torch.Tensor

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def slice(self, start: int, stop: int) -> TrainingEpisodes:
        """Episodes ``[start, stop)`` (a micro-batch, or one process's share)."""
        return TrainingEpisodes(
            self.rows[start:stop], self.objective[start:stop], self.num_context[start:stop]
        )

    def batch(self, data: PreferenceData, max_context: int) -> EpisodeBatch:
        """Their features and choices: ``max_context`` context slots, masked to each size."""
        slots = torch.arange(max_context, device=self.rows.device)
        context_mask = slots < self.num_context.unsqueeze(1)  # (B, N)
        target_mask = torch.ones(self.rows.shape, dtype=torch.bool, device=self.rows.device)
        return _gather_batch(
            data, self.rows[:, :max_context], context_mask, self.rows, target_mask, self.objective
        )


class EpisodeSampler:
    """Fresh training episodes every call, as index tensors; context ⊆ targets (NP convention).

    One sampler for every model: reward models gather feature pairs from the
    rows (:meth:`TrainingEpisodes.batch`), policies gather tokenised pairs.

    Args:
        split_rows: (P,) long rows of the split to draw from.
        objective_ids: (K',) long objective columns users are drawn from.
        num_targets: T pairs per episode.
        min_context, max_context: the context size is uniform in this range.
        seed: seeds the sampler's own generator.
        device: where the draws are made and the episodes live.
    """

    def __init__(
        self,
        split_rows: torch.Tensor,
        objective_ids: torch.Tensor,
        num_targets: int,
        min_context: int,
        max_context: int,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0 <= min_context <= max_context < num_targets:
            raise ValueError(
                "need 0 <= min_context <= max_context < num_targets, got "
                f"min_context={min_context}, max_context={max_context}, num_targets={num_targets}"
            )
        self.device = torch.device(device)
        self.split_rows = split_rows.to(self.device)
        self.objective_ids = objective_ids.to(self.device)
        self.num_targets = num_targets
        self.min_context = min_context
        self.max_context = max_context
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, batch_size: int) -> TrainingEpisodes:
        g, dev = self.generator, self.device
        picks = sample_distinct(len(self.split_rows), (batch_size, self.num_targets), g, dev)
        pick = torch.randint(len(self.objective_ids), (batch_size,), generator=g, device=dev)
        num_context = torch.randint(
            self.min_context, self.max_context + 1, (batch_size,), generator=g, device=dev
        )
        return TrainingEpisodes(self.split_rows[picks], self.objective_ids[pick], num_context)


@dataclass(frozen=True)
class EvaluationEpisodes:
    """Fixed evaluation episodes, shared by every model and the oracle.

    Each episode holds ``max_context + num_targets`` distinct pairs: the first
    ``max_context`` are context slots (a context of size n uses the first n),
    the last ``num_targets`` are scored targets, never in the context.

    Attributes:
        rows: (E, max_context + T) long row indices into the preference data.
        objective: (E,) long objective column of each episode.
        max_context: number of context slots.
    """

    rows: torch.Tensor
    objective: torch.Tensor
    max_context: int

    @property
    def num_targets(self) -> int:
        return self.rows.shape[1] - self.max_context

    def __len__(self) -> int:
        return self.rows.shape[0]

    def batch(
        self, data: PreferenceData, num_context: int, start: int = 0, stop: int | None = None
    ) -> EpisodeBatch:
        """Episodes ``[start, stop)`` with a context of ``num_context`` pairs."""
        if not 0 <= num_context <= self.max_context:
            raise ValueError(f"num_context must be in [0, {self.max_context}], got {num_context}")
        rows = self.rows[start:stop].to(data.features.device)
        objective = self.objective[start:stop].to(data.features.device)
        context_rows = rows[:, :num_context]  # (B, n)
        target_rows = rows[:, self.max_context :]  # (B, T)
        context_mask = torch.ones(context_rows.shape, dtype=torch.bool, device=rows.device)
        target_mask = torch.ones(target_rows.shape, dtype=torch.bool, device=rows.device)
        return _gather_batch(data, context_rows, context_mask, target_rows, target_mask, objective)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "rows": self.rows,
            "objective": self.objective,
            "max_context": torch.tensor(self.max_context),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> EvaluationEpisodes:
        return cls(tensors["rows"], tensors["objective"], int(tensors["max_context"]))


def make_evaluation_episodes(
    split_rows: torch.Tensor,
    objective_ids: torch.Tensor,
    episodes_per_objective: int,
    num_targets: int,
    max_context: int,
    seed: int,
) -> EvaluationEpisodes:
    """Draw a fixed, seeded set of evaluation episodes, balanced over objectives.

    Each objective gets the same number of episodes so that the pooled
    ("all users") accuracy is not tilted towards one user type.
    """
    generator = torch.Generator().manual_seed(seed)
    total = episodes_per_objective * len(objective_ids)
    picks = sample_distinct(
        len(split_rows), (total, max_context + num_targets), generator, torch.device("cpu")
    )
    objective = objective_ids.repeat_interleave(episodes_per_objective)
    return EvaluationEpisodes(split_rows[picks], objective, max_context)


def make_test_episodes(
    split_rows: torch.Tensor,
    num_objectives: int,
    episodes_per_objective: int,
    num_targets: int,
    max_context: int,
    seed: int,
    *,
    parameters: str,
    split: str,
    unit: str = "",
) -> EvaluationEpisodes:
    """The fixed episodes an evaluation scores every model on, over objectives ``0..K-1``.

    :func:`make_evaluation_episodes` after
    :func:`~steerable_alignment.episodes.sizes.check_evaluation_split`
    (``parameters``, ``split`` and ``unit`` word its error).

    Raises:
        ConfigError: the split has fewer than ``max_context + num_targets`` pairs.
    """
    check_evaluation_split(
        len(split_rows), max_context, num_targets, parameters=parameters, split=split, unit=unit
    )
    return make_evaluation_episodes(
        split_rows,
        torch.arange(num_objectives),
        episodes_per_objective,
        num_targets,
        max_context,
        seed,
    )
