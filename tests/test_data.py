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
