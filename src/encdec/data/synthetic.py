"""`synthetic:TASK`: generated sequence tasks for tests and quick checks (no download, seconds to learn).

Tokens are the words s0..s{n-1}; lengths 3..12. Tasks: copy, reverse, sort.
"""

from __future__ import annotations

import random

from encdec.data.corpus import Pair, ParallelCorpus

TASKS = {
    "copy": lambda xs: xs,
    "reverse": lambda xs: xs[::-1],
    "sort": lambda xs: sorted(xs, key=lambda w: int(w[1:])),
}
N_SYMBOLS = 20
SIZES = {"train": 20000, "dev": 200, "test": 200}


def build(task: str, seed: int = 0) -> ParallelCorpus:
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {', '.join(TASKS)}")
    rng = random.Random(seed)
    fn = TASKS[task]
    splits = {}
    for split, n in SIZES.items():
        pairs = []
        for i in range(n):
            xs = [f"s{rng.randrange(N_SYMBOLS)}" for _ in range(rng.randint(3, 12))]
            pairs.append(Pair(" ".join(xs), " ".join(fn(xs)), f"{split}.{i}"))
        splits[split] = pairs
    return ParallelCorpus(f"synthetic:{task}", **splits)
