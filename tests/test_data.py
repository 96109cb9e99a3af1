import pytest

from encdec.data import load_corpus
from encdec.data.batching import bucket, collate, epoch_order, padding_fraction
from encdec.data.vocab import BOS, EOS, PAD


def test_text_source_errors_name_the_problem(tmp_path):
    (tmp_path / "a.es").write_text("uno\ndos\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(ValueError, match="2 lines.*1"):
        load_corpus(f"text:{tmp_path}/a.es,{tmp_path}/a.en")
    (tmp_path / "b.en").write_bytes(b"one\n\xfftwo\n")
    with pytest.raises(ValueError, match=r"b\.en:2: invalid UTF-8"):
        load_corpus(f"text:{tmp_path}/a.es,{tmp_path}/b.en")
    with pytest.raises(ValueError, match="cannot read"):
        load_corpus(f"text:{tmp_path}/nope.es,{tmp_path}/a.en")
    with pytest.raises(ValueError, match="unknown data source"):
        load_corpus("wikipedia:es-en")


def test_text_source_reads_pairs(tmp_path):
    (tmp_path / "x.es").write_text("".join(f"frase {i}\n" for i in range(200)))
    (tmp_path / "x.en").write_text("".join(f"sentence {i}\n" for i in range(200)))
    c = load_corpus(f"text:{tmp_path}/x.es,{tmp_path}/x.en")
    assert len(c.train) + len(c.dev) + len(c.test) == 200
    assert all(p.src.split()[1] == p.tgt.split()[1] for p in c.train)


def test_bucketing_covers_every_example_once_within_budget():
    lengths = [(n % 37 + 1, (n * 7) % 41 + 1) for n in range(1000)]
    batches = bucket(lengths, 256)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    for b in batches:
        assert len(b) * max(max(lengths[i]) + 1 for i in b) <= 256
    assert padding_fraction(batches, lengths) < 0.35


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(50, seed=1, epoch=2) == epoch_order(50, seed=1, epoch=2)
    assert epoch_order(50, seed=1, epoch=2) != epoch_order(50, seed=1, epoch=3)
    assert sorted(epoch_order(50, seed=1, epoch=2)) == list(range(50))


def test_collate_shapes_and_specials():
    b = collate([([5, 6], [7]), ([5], [7, 8, 9])])
    assert b.src.tolist() == [[5, 6, EOS], [5, EOS, PAD]]
    assert b.tgt_in.tolist() == [[BOS, 7, PAD, PAD], [BOS, 7, 8, 9]]
    assert b.tgt_out.tolist() == [[7, EOS, PAD, PAD], [7, 8, 9, EOS]]
    assert b.n_tokens == 6


def test_a_process_waits_while_another_fills_the_cache(tmp_path):
    """Runs started together on a fresh machine must not write the same cache files at once: a
    second process asking for the vocabulary waits while the cache folder's lock is held, then
    reads what the holder wrote instead of training its own."""
    import subprocess
    import sys
    import time

    from encdec.config import DataConfig
    from encdec.data import cache_lock, corpus_dir
    from encdec.data.prepare import vocab_path
    from encdec.data.vocab import train_vocab

    cfg = DataConfig(source="synthetic:copy", vocab_size=64, cache_dir=str(tmp_path))
    folder = corpus_dir(cfg.source, cfg.cache_dir)
    script = ("from encdec.config import DataConfig; from encdec.data import load_corpus; "
              "from encdec.data.prepare import load_vocab; "
              f"cfg = DataConfig(source='synthetic:copy', vocab_size=64, cache_dir={str(tmp_path)!r}); "
              "corpus = load_corpus(cfg.source); print('ready', flush=True); "
              "print(load_vocab(cfg, corpus).size)")
    with cache_lock(folder):
        other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline() == "ready\n"
        time.sleep(2)  # an unlocked process trains its own 64 pieces in well under this
        assert other.poll() is None, "the second process did not wait for the lock"
        texts = [t for p in load_corpus(cfg.source).train for t in (p.src, p.tgt)]
        vocab = train_vocab(texts, vocab_path(cfg).with_suffix(""), vocab_size=64)
        written = vocab_path(cfg).stat().st_mtime_ns
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0 and int(out) == vocab.size
    assert f"waiting for {folder / '.lock'}" in err  # the waiter says what it waits for
    assert vocab_path(cfg).stat().st_mtime_ns == written  # it read the file, it did not train again
