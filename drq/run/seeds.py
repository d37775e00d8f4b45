"""Where every episode of a run starts: an env seed drawn from the run's seed and the episode's place in the run.

- Training episode ``k`` (the ``k``-th ``reset`` of the training env, counting from 0; an episode cut short by a
  failing environment counts too) starts with ``reset(seed=train_episode_seed(seed, k))``: the ``k``-th child of
  ``numpy.random.SeedSequence(seed)``.
- Evaluation episode ``j`` of the evaluation at frame ``F`` starts with ``reset(seed=episode_seeds(seed, F, n)[j])``:
  ``numpy.random.SeedSequence((seed, F, j))``.

Nothing else enters: not the environment's history, not how many processes play the episodes, not a resume or a
restarted worker. So a resumed run resets its training env once, with its episode's seed (no fast-forward), and a
restarted worker goes on with the next episode's seed. Both are 32-bit seeds, what ``PixelEnv.reset(seed=)`` takes;
the two families differ (a child's entropy holds the spawn key after the padded seed, an evaluation's three words do
not), so no training episode starts where an evaluation episode does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["episode_seeds", "train_episode_seed"]


def train_episode_seed(seed: int, episode: int) -> int:
    """The env seed of training episode ``episode`` (its reset's index, from 0) of a run seeded ``seed``: 32 bits of
    ``numpy.random.SeedSequence(seed).spawn(episode + 1)[episode]``."""
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(episode),)).generate_state(1)[0])


def episode_seeds(seed: int, frame: int, episodes: int) -> list[int]:
    """The env seed of each episode of the evaluation at ``frame`` (frames) of a run seeded ``seed``: episode ``j``
    gets 32 bits of ``numpy.random.SeedSequence((seed, frame, j))``, so episodes differ from one another, from one
    evaluation to the next and from the training episodes (:func:`train_episode_seed`), and nothing else (worker
    count, earlier evaluations, resumes) enters."""
    return [int(np.random.SeedSequence((int(seed), int(frame), j)).generate_state(1)[0]) for j in range(episodes)]
