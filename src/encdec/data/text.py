"""`text:SRC,TGT`: any pair of line-aligned plain-text files.

The split is deterministic: line i goes to test when md5(i) % 100 < 5, dev when < 10.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from encdec.data.corpus import Pair, ParallelCorpus


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{i}: invalid UTF-8 at byte {e.start}") from None
    return out


def build(spec: str) -> ParallelCorpus:
    parts = spec.split(",")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"text source {spec!r}: expected text:SRC_FILE,TGT_FILE")
    src_path, tgt_path = map(Path, parts)
    src, tgt = _read_lines(src_path), _read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be line-aligned")
    splits: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for i, (s, t) in enumerate(zip(src, tgt)):
        if not s.strip() or not t.strip():
            continue
        h = int(hashlib.md5(str(i).encode()).hexdigest(), 16) % 100
        splits["test" if h < 5 else "dev" if h < 10 else "train"].append(Pair(s.strip(), t.strip(), str(i + 1)))
    if not splits["train"]:
        raise ValueError(f"text source {spec!r} has no non-empty line pairs")
    return ParallelCorpus(f"text:{spec}", **splits)
