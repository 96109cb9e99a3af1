"""A run's data, ready to train on: corpus -> joint vocabulary -> encoded, length-filtered pairs ->
length-bucketed batches. Also the corpus statistics `encdec data` prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from encdec.config import DataConfig, RunConfig
from encdec.data import ParallelCorpus, cache_lock, corpus_dir, load_corpus
from encdec.data.batching import bucket
from encdec.data.vocab import Vocab, train_vocab

Log = Callable[[str], None]


@dataclass
class Data:
    corpus: ParallelCorpus
    vocab: Vocab
    train: list[tuple[list[int], list[int]]]  # encoded, length-filtered
    dev: list[tuple[list[int], list[int]]]
    train_batches: list[list[int]]  # index lists into train
    dev_batches: list[list[int]]


def vocab_path(cfg: DataConfig) -> Path:
    return corpus_dir(cfg.source, cfg.cache_dir) / f"spm-{cfg.spm_model}-{cfg.vocab_size}.model"


def load_vocab(cfg: DataConfig, corpus: ParallelCorpus, log: Log | None = None) -> Vocab:
    """The corpus's joint SentencePiece vocabulary, trained on its train split once and cached."""
    path = vocab_path(cfg)
    with cache_lock(path.parent):
        if path.exists():
            return Vocab(path)
        if log:
            log(f"training a joint {cfg.spm_model} SentencePiece vocabulary of {cfg.vocab_size} on the train split ...")
        texts = [t for p in corpus.train for t in (p.src, p.tgt)]
        return train_vocab(texts, path.with_suffix(""), vocab_size=cfg.vocab_size, model_type=cfg.spm_model)


def prepare_data(cfg: RunConfig, log: Log | None = None) -> Data:
    corpus = load_corpus(cfg.data.source, cfg.data.cache_dir, log=log)
    vocab = load_vocab(cfg.data, corpus, log)
    if vocab.size > cfg.model.vocab_size:
        raise ValueError(f"vocabulary has {vocab.size} pieces but model.vocab_size={cfg.model.vocab_size}")

    def enc(pairs):
        return list(zip(vocab.encode([p.src for p in pairs]), vocab.encode([p.tgt for p in pairs])))

    limit = min(cfg.data.max_len, cfg.model.max_len - 1)
    train = [(s, t) for s, t in enc(corpus.train) if len(s) < limit and len(t) < limit]
    if not train:
        raise ValueError(f"no training pairs shorter than data.max_len={cfg.data.max_len} tokens")
    dev = enc(corpus.dev)
    lens = [(len(s), len(t)) for s, t in train]
    return Data(corpus, vocab, train, dev, bucket(lens, cfg.train.max_tokens),
                bucket([(len(s), len(t)) for s, t in dev], cfg.train.max_tokens))


def split_stats(corpus: ParallelCorpus) -> dict[str, dict[str, float]]:
    """Per split: pairs, whitespace words per side, their mean and maximum lengths."""
    stats = {}
    for split in ("train", "dev", "test"):
        pairs = corpus.split(split)
        sw = [len(p.src.split()) for p in pairs]
        tw = [len(p.tgt.split()) for p in pairs]
        stats[split] = {"pairs": len(pairs), "src_words": sum(sw), "tgt_words": sum(tw),
                        "src_mean_len": round(sum(sw) / max(len(sw), 1), 1),
                        "tgt_mean_len": round(sum(tw) / max(len(tw), 1), 1),
                        "src_max_len": max(sw, default=0), "tgt_max_len": max(tw, default=0)}
    return stats
