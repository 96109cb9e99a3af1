"""Corpora -> joint SentencePiece vocabulary -> length-bucketed batches.

`load_corpus("bible:es-en" | "text:SRC,TGT" | "synthetic:TASK")` returns a ParallelCorpus;
the Bible corpus is prepared once and cached on disk.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from encdec.data import bible, synthetic, text
from encdec.data.corpus import Pair, ParallelCorpus, cache_lock, cache_root, load_cached, save_corpus

__all__ = ["Pair", "ParallelCorpus", "cache_lock", "load_corpus", "corpus_dir"]


def corpus_dir(source: str, cache_dir: str | None = None) -> Path:
    """Where a source's prepared corpus and vocabularies live."""
    if source == "bible:es-en":
        return cache_root(cache_dir) / f"bible-es-en-{bible.VERSION}"
    digest = hashlib.md5(source.encode()).hexdigest()[:10]
    return cache_root(cache_dir) / f"{source.split(':', 1)[0]}-{digest}"


def load_corpus(source: str, cache_dir: str | None = None, *, log=None) -> ParallelCorpus:
    kind, _, arg = source.partition(":")
    if kind == "bible":
        if arg != "es-en":
            raise ValueError(f"unknown Bible pair {arg!r}; available: bible:es-en")
        folder = corpus_dir(source, cache_dir)
        with cache_lock(folder):
            cached = load_cached(source, folder)
            if cached is not None:
                return cached
            t0 = time.time()
            if log:
                log(f"preparing {source} from the SWORD modules (once; cached in {folder}) ...")
            corpus = bible.build()
            save_corpus(corpus, folder)
        if log:
            log(f"prepared {source} in {time.time() - t0:.0f} s")
        return corpus
    if kind == "text":
        return text.build(arg)
    if kind == "synthetic":
        return synthetic.build(arg)
    raise ValueError(f"unknown data source {source!r}; expected bible:es-en, text:SRC,TGT or synthetic:TASK")
