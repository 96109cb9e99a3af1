"""The parallel-corpus value every source produces, and its on-disk cache (JSON lines)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    src: str
    tgt: str
    id: str = ""
    extra_refs: tuple[str, ...] = ()  # further references for tgt (e.g. KJV beside WEB)


@dataclass(frozen=True)
class ParallelCorpus:
    name: str
    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]

    def split(self, name: str) -> list[Pair]:
        if name not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {name!r}; choose train, dev or test")
        return getattr(self, name)


def cache_root(override: str | None = None) -> Path:
    root = override or os.environ.get("ENCDEC_CACHE") or Path.home() / ".cache" / "encdec"
    return Path(root)


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold `folder` while checking and filling its cache: runs started together on a fresh machine
    (`benchmarks/parallel_runs.sh`) would otherwise all prepare the corpus and train the vocabulary
    at once, writing the same files under each other. The others wait (an flock on
    `folder/.lock`, dropped by the kernel however its holder dies), then find the cache filled;
    a waiter says so on stderr, since a holder stopped with SIGSTOP would keep it waiting."""
    import fcntl
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {folder / '.lock'}: another encdec process is preparing this cache "
                  "(or is stopped while holding it)", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_corpus(corpus: ParallelCorpus, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        tmp = folder / f"{split}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for p in corpus.split(split):
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        tmp.replace(folder / f"{split}.jsonl")


def load_cached(name: str, folder: Path) -> ParallelCorpus | None:
    if not all((folder / f"{s}.jsonl").exists() for s in ("train", "dev", "test")):
        return None
    splits = {}
    for s in ("train", "dev", "test"):
        with (folder / f"{s}.jsonl").open(encoding="utf-8") as f:
            splits[s] = [Pair(d["src"], d["tgt"], d["id"], tuple(d["extra_refs"])) for d in map(json.loads, f)]
    return ParallelCorpus(name, **splits)
