"""What a LeGR search may do (`SearchSettings`): a leaf of the pruning package, so the search, the candidate
fitness and the trainers that supply it can all read it without importing each other (`check` looks a fitness's
name up in the fitness registry when it runs, not when this module is imported)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune import search_defaults
from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class SearchSettings:
    population: int = search_defaults.POPULATION
    sample_size: int = 8
    generations: int = search_defaults.GENERATIONS
    mutation_share: float = 0.2
    mutation_scale: float = 1.0
    steps: int = search_defaults.STEPS  # Adam steps before "adaptive-bn" / "probe" scores a candidate
    batch_size: int = 64
    lr: float = 1e-3
    calibration: int = 2  # batches that re-estimate a candidate's BatchNorm statistics
    val_samples: int = 256
    fitness: str = "adaptive-bn"  # a name in edgeprune.pruning.fitness.FITNESSES
    tau: int = 20  # training steps per candidate of "tau-steps" and "distill" (NNCF's LeGR: 20)
    probe_samples: int = 256  # training images the probe refits the classifier on
    finalists: int = search_defaults.FINALISTS  # best distinct candidates re-judged after a short fine-tune
    finalist_steps: int = 50  # Adam steps each finalist gets before it is scored
    finalist_samples: int = 2048  # validation images a finalist is scored on
    minutes: float = 3.0

    @classmethod
    def sized(cls, population: int, generations: int, steps: int, minutes: float) -> SearchSettings:
        """What `run` and the benchmark ask for: tournaments of a quarter of the population (at least 2)."""
        return cls(population, max(2, population // 4), generations, steps=steps, minutes=minutes)

    def check(self) -> None:
        problems = []
        if self.population < 2:
            problems.append("--population must be at least 2")
        if not 1 <= self.sample_size <= self.population:
            problems.append("--sample-size must be between 1 and --population")
        if self.generations < 0:
            problems.append("--generations must be >= 0")
        if not 0.0 < self.mutation_share <= 1.0:
            problems.append("--mutation-share must be in (0, 1]")
        if self.mutation_scale <= 0:
            problems.append("--mutation-scale must be positive")
        if self.steps < 0 or self.calibration < 0 or self.batch_size < 1 or self.val_samples < 1:
            problems.append("--search-steps and calibration batches >= 0, batch size and validation samples >= 1")
        if self.minutes <= 0:
            problems.append("--search-minutes must be positive")
        from edgeprune.pruning.fitness import FITNESSES

        if self.fitness not in FITNESSES:
            problems.append(f"unknown search fitness '{self.fitness}' (choose one of {', '.join(FITNESSES)})")
        if self.tau < 0:
            problems.append("--tau must be >= 0")
        if self.probe_samples < 1:
            problems.append("probe samples must be >= 1")
        if self.finalists < 0 or self.finalist_steps < 0 or self.finalist_samples < 1:
            problems.append("finalists and their steps must be >= 0, their validation samples >= 1")
        if problems:
            raise EdgepruneError("; ".join(problems))
