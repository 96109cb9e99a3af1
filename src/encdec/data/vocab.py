"""Joint SentencePiece vocabulary shared by source and target (one embedding matrix)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Vocab:
    def __init__(self, model_file: Path):
        self.path = Path(model_file)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"cannot load SentencePiece model {self.path}: {e}") from None

    @property
    def size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        """Specials are dropped, and so are ids past the vocabulary: the model's embedding may be
        larger than a small corpus's vocabulary, and an undertrained model can emit those rows."""
        size = self.size
        return self.sp.decode([i for i in ids if EOS < i < size])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]


def train_vocab(texts: Iterable[str], out_prefix: Path, *, vocab_size: int, model_type: str = "unigram") -> Vocab:
    """Train on `texts` (both languages) and write out_prefix.model; ids 0..3 = pad, unk, bos, eos.

    The size is a ceiling: a small corpus (a synthetic task) may yield fewer pieces.
    """
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for t in texts:
            f.write(t.replace("\n", " ") + "\n")
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=str(out_prefix), vocab_size=vocab_size, model_type=model_type,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, character_coverage=1.0,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=2,
            hard_vocab_limit=False, minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"SentencePiece training failed (vocab_size={vocab_size}): {e}") from None
    finally:
        Path(corpus).unlink(missing_ok=True)
    return Vocab(out_prefix.with_suffix(".model"))
