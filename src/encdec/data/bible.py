"""`bible:es-en`: Reina-Valera 1909 (Spanish) -> World English Bible, KJV as a second reference.

Pipeline: read the SWORD modules with pysword -> strip OSIS markup -> align verses book by
book (the Spanish module keeps Hebrew numbering inside KJV slots in some chapters) -> split by
whole chapters with md5("Book.Chapter") -> drop dev/test sentences that also occur in train.
The split rule is part of encdec's public spec: keep it stable.
"""

from __future__ import annotations

import functools
import hashlib
import html
import math
import multiprocessing
import os
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from encdec.data.corpus import Pair, ParallelCorpus

MODULES = {"es": "spaRV1909eb", "en": "engWEB2015eb", "kjv": "engKJV2006eb"}
PACKAGES = "sword-text-sparv sword-text-web sword-text-kjv"
VERSION = "v2"  # bump when cleaning/alignment changes, so caches are rebuilt

Ref = tuple[str, int, int]  # (OSIS book, chapter, verse)


def sword_path() -> Path:
    return Path(os.environ.get("SWORD_PATH", "/usr/share/sword"))


def modules_available() -> bool:
    mods = sword_path() / "mods.d"
    return all((mods / f"{m}.conf").exists() or (mods / f"{m.lower()}.conf").exists() for m in MODULES.values())


def read_module(key: str) -> tuple[list[str], dict[Ref, str]]:
    """Raw OSIS text of every verse slot of module `key`, and the book order."""
    from pysword.modules import SwordModules

    missing = f"SWORD module {key} not found under {sword_path()}; install it with: apt-get install {PACKAGES}"
    if not modules_available():
        raise ValueError(missing)
    library = SwordModules(str(sword_path()))
    if key not in library.parse_modules():
        raise ValueError(missing)
    bible = library.get_bible_from_module(key)
    # pysword decompresses a whole book block for every verse; cache the blocks (30 s -> 0.3 s)
    bible._decompressed_text = functools.lru_cache(maxsize=None)(bible._decompressed_text)
    books, verses = [], {}
    for testament in bible.get_structure().get_books().values():
        for book in testament:
            texts = list(bible.get_iter(books=[book.osis_name], clean=False))
            refs = [(book.osis_name, c, v) for c, n in enumerate(book.chapter_lengths, 1) for v in range(1, n + 1)]
            assert len(refs) == len(texts), (key, book.osis_name)
            books.append(book.osis_name)
            verses.update(zip(refs, texts))
    return books, verses


# --- OSIS -> plain text ---------------------------------------------------------------------

_TAG = re.compile(r"<(/?)([A-Za-z]+)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>")
_ATTR = re.compile(r'([A-Za-z:]+)="([^"]*)"')
_SEP = "\x00"  # marks where a tag stood: becomes a space between two word characters


def clean_osis(raw: str) -> str:
    """Strip OSIS markup, keeping the verse's words and canonical titles (psalm superscriptions).

    Dropped with their content: notes, non-canonical titles (section headings, KJV's epistle
    subscriptions) and everything from a glossary division on (WEB Rev 22:21 carries it).
    A removed tag between two letters becomes a space, so words never glue together.
    """
    out: list[str] = []
    skip: list[str] = []  # stack of open elements whose content is dropped
    pos = 0
    for m in _TAG.finditer(raw):
        if not skip:
            out.append(raw[pos : m.start()])
        pos = m.end()
        closing, name, attrs, selfclosing = m.group(1) == "/", m.group(2), dict(_ATTR.findall(m.group(3))), m.group(4)
        out.append(_SEP)
        if attrs.get("type") == "glossary":
            pos = len(raw)
            break
        milestone = selfclosing or "sID" in attrs or "eID" in attrs
        if milestone:
            continue
        if closing:
            if skip and skip[-1] == name:
                skip.pop()
            continue
        dropped = name == "note" or (name == "title" and attrs.get("canonical") != "true")
        if dropped or skip:
            skip.append(name)
    if not skip:
        out.append(raw[pos:])
    # ¶ is KJV's paragraph sign; KJV 1 John 2:23 brackets words absent from the manuscripts
    text = html.unescape("".join(out)).replace("¶", " ").translate(str.maketrans("", "", "[]{}"))
    text = re.sub(rf"(?<=\w){_SEP}+(?=\w)", " ", text).replace(_SEP, "")
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([,.;:!?])", r"\1", text)


_CAPS = "A-ZÁÉÍÓÚÑÜ"
# an all-caps run opening the verse, or a psalm after its title, followed by ordinary words
_OPENING = re.compile(rf"(?:^|(?<=\. ))([¡¿]?)((?:[{_CAPS}]+\s+)*[{_CAPS}]{{2,}})(?=[\s,;:]+\S*[a-záéíóúñü])")
_CAPS_WORD = re.compile(rf"\b[{_CAPS}]{{2,}}\b")
# the one sentence after an epistle's closing "Amén." that says where it was written or sent from
_SUBSCRIPTION = re.compile(r"(Amén\.)\s+[^.]*\b(?:[Ee]scrita|[Ee]nviada)\b[^.]*\.\s*$")


def fix_spanish(text: str) -> str:
    """Undo the module's capitalised chapter openings ("EN el principio" -> "En el principio",
    "Y DESPUÉS movió" -> "Y después movió", "¡OH Jehová" -> "¡Oh Jehová") and drop the epistles'
    subscriptions ("Amén. Fué escrita de Corinto ..."), which the English texts do not carry.
    All-caps runs elsewhere are inscriptions ("REY DE LOS JUDIOS") and stay."""
    text = _OPENING.sub(lambda m: m.group(1) + m.group(2)[0] + m.group(2)[1:].lower(), text)

    def repl(m: re.Match) -> str:
        before, after = text[: m.start()], text[m.end() :]
        if re.match(rf"\s+[{_CAPS}]+\b", after) or re.search(rf"\b[{_CAPS}]+\s+$", before):
            return m.group(0)
        word = m.group(0).lower()
        initial = not before.strip() or re.search(r"[.!?¡¿:]\s*$", before)
        return word[0].upper() + word[1:] if initial else word

    text = _CAPS_WORD.sub(repl, text)
    return _SUBSCRIPTION.sub(r"\1", text)


# --- alignment ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verse:
    ref: Ref
    text: str


def _fold(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", _fold(text)))


def learn_dictionary(es: dict[Ref, str], en: dict[Ref, str], min_dice: float = 0.3) -> dict[str, str]:
    """A tiny Spanish->English word dictionary from verses with the same reference.

    Most chapters are numbered alike, so co-occurrence over same-reference verses is a good
    enough signal: each Spanish word maps to the English word with the highest Dice score.
    Very frequent words (and, of, the...) and rare ones are left out.
    """
    es_w = {r: _words(t) for r, t in es.items() if r in en}
    en_w = {r: _words(en[r]) for r in es_w}
    f_es, f_en = Counter(), Counter()
    for r in es_w:
        f_es.update(es_w[r])
        f_en.update(en_w[r])
    ok_es = {w for w, c in f_es.items() if 5 <= c <= 1500}
    ok_en = {w for w, c in f_en.items() if 5 <= c <= 1500}
    pairs: Counter = Counter()
    for r in es_w:
        a, b = es_w[r] & ok_es, en_w[r] & ok_en
        pairs.update((x, y) for x in a for y in b)
    best: dict[str, tuple[float, str]] = {}
    for (x, y), c in pairs.items():
        dice = 2 * c / (f_es[x] + f_en[y])
        if dice >= min_dice and dice > best.get(x, (0.0, ""))[0]:
            best[x] = (dice, y)
    return {x: y for x, (_, y) in best.items()}


@dataclass(frozen=True)
class AlignCosts:
    log_ratio_mean: float  # median of log(len_en / len_es) in characters
    log_ratio_std: float
    dictionary: dict[str, str]
    merge: float = 1.5  # extra cost of a 1-2 or 2-1 link
    skip: float = 2.0  # a verse left out
    same_ref_bonus: float = 1.0
    lexical_weight: float = 4.0

    def translations(self, es_words: frozenset[str]) -> list[str]:
        """The dictionary translations of the Spanish words it knows."""
        return [self.dictionary[w] for w in es_words if w in self.dictionary]

    def pair(self, translations: list[str], en_words: frozenset[str], es_len: int, en_len: int) -> float:
        """Cost of linking a Spanish span (its `translations`, length in characters) to an English one."""
        r = (math.log((en_len + 20) / (es_len + 20)) - self.log_ratio_mean) / self.log_ratio_std
        hit = sum(t in en_words for t in translations) / len(translations) if translations else 0.0
        return 0.5 * min(r * r, 16.0) - self.lexical_weight * hit


def align_book(es: list[Verse], en: list[Verse], costs: AlignCosts,
               band: int = 14) -> list[tuple[list[Verse], list[Verse]]]:
    """Monotone alignment of one book's verses: links 1-1, 1-2, 2-1, or a skipped verse.

    Dynamic programming in a band around the diagonal; the cost of a link is a length term
    (Gale & Church style, on log length ratio) minus the share of the Spanish words whose
    dictionary translation occurs in the English side (`learn_dictionary`), with a bonus
    for 1-1 links of identical references so that ordinary chapters follow the numbering.
    """
    n, m = len(es), len(en)
    es_words = [_words(v.text) for v in es]
    en_words = [_words(v.text) for v in en]
    # every span a link can cover, computed once: es_span[d][i] covers Spanish verses i-d .. i-1
    # (its translations and length), en_span[d][j] English verses j-d .. j-1 (words and length)
    es_span = {d: [(costs.translations(frozenset().union(*es_words[i - d : i])),
                    sum(len(v.text) for v in es[i - d : i])) if i >= d else None for i in range(n + 1)]
               for d in (1, 2)}
    en_span = {d: [(frozenset().union(*en_words[j - d : j]), sum(len(v.text) for v in en[j - d : j]))
                   if j >= d else None for j in range(m + 1)] for d in (1, 2)}
    inf = float("inf")
    best: dict[tuple[int, int], tuple[float, tuple[int, int] | None]] = {(0, 0): (0.0, None)}

    width = band + abs(m - n)
    for i in range(n + 1):
        center = i * m / max(n, 1)
        for j in range(max(0, math.floor(center - width)), min(m, math.ceil(center + width)) + 1):
            if (i, j) == (0, 0):
                continue
            cands = []
            for di, dj in ((1, 1), (1, 0), (0, 1), (1, 2), (2, 1)):
                prev = best.get((i - di, j - dj))
                if prev is None:
                    continue
                if di == 0 or dj == 0:
                    c = costs.skip
                else:
                    (trans, es_len), (words, en_len) = es_span[di][i], en_span[dj][j]
                    c = costs.pair(trans, words, es_len, en_len)
                    if di == dj == 1 and es[i - 1].ref == en[j - 1].ref:
                        c -= costs.same_ref_bonus
                    if di + dj == 3:
                        c += costs.merge
                cands.append((prev[0] + c, (i - di, j - dj)))
            if cands:
                best[(i, j)] = min(cands, key=lambda x: x[0])
    if (n, m) not in best or best[(n, m)][0] == inf:
        raise AssertionError("alignment band too narrow")
    links = []
    cell = (n, m)
    while cell != (0, 0):
        prev = best[cell][1]
        assert prev is not None
        a, b = es[prev[0] : cell[0]], en[prev[1] : cell[1]]
        if a and b:
            links.append((a, b))
        cell = prev
    return links[::-1]


def estimate_costs(es: dict[Ref, str], en: dict[Ref, str]) -> AlignCosts:
    logs = [math.log((len(en[r]) + 20) / (len(es[r]) + 20)) for r in es if r in en]
    mean = statistics.median(logs)
    mad = statistics.median(abs(x - mean) for x in logs)
    return AlignCosts(log_ratio_mean=mean, log_ratio_std=max(1.4826 * mad, 0.05), dictionary=learn_dictionary(es, en))


# --- the corpus ---------------------------------------------------------------------------

def split_of(book: str, chapter: int) -> str:
    """The public split rule: md5("Book.Chapter") % 100 < 5 -> test, < 10 -> dev, else train."""
    h = int(hashlib.md5(f"{book}.{chapter}".encode()).hexdigest(), 16) % 100
    return "test" if h < 5 else "dev" if h < 10 else "train"


def _ref_str(refs: list[Ref]) -> str:
    first, last = refs[0], refs[-1]
    s = f"{first[0]}.{first[1]}.{first[2]}"
    return s if first == last else f"{s}-{last[0]}.{last[1]}.{last[2]}"


def aligned_verses() -> list[tuple[list[Ref], list[Ref], str, str, str]]:
    """Every aligned link as (es refs, en refs, Spanish, WEB English, KJV English), canon order."""
    books, es_raw = read_module(MODULES["es"])
    _, en_raw = read_module(MODULES["en"])
    _, kjv_raw = read_module(MODULES["kjv"])
    es = dict(zip(es_raw, _map(_clean_spanish, list(es_raw.values()))))
    en = dict(zip(en_raw, _map(clean_osis, list(en_raw.values()))))
    kjv = dict(zip(kjv_raw, _map(clean_osis, list(kjv_raw.values()))))
    es = {r: t for r, t in es.items() if t}
    en = {r: t for r, t in en.items() if t}
    costs = estimate_costs(es, en)
    by_book: dict[str, tuple[list[Verse], list[Verse]]] = {book: ([], []) for book in books}
    for side, verses in ((0, es), (1, en)):
        for r, t in verses.items():
            if r[0] in by_book:
                by_book[r[0]][side].append(Verse(r, t))
    jobs = [(es_v, en_v, costs) for es_v, en_v in by_book.values() if es_v and en_v]
    out = []
    # one book per task, largest first, so that the last task to finish is a small one
    for links in _map(_align_job, jobs, sizes=[len(es_v) for es_v, _, _ in jobs]):
        for a, b in links:
            en_refs = [v.ref for v in b]
            k = " ".join(kjv.get(r, "") for r in en_refs).strip()
            out.append(([v.ref for v in a], en_refs, " ".join(v.text for v in a), " ".join(v.text for v in b), k))
    return out


def _clean_spanish(raw: str) -> str:
    return fix_spanish(clean_osis(raw))


def _align_job(job: tuple[list[Verse], list[Verse], AlignCosts]) -> list[tuple[list[Verse], list[Verse]]]:
    return align_book(*job)


def _map(fn, items: list, sizes: list[int] | None = None) -> list:
    """[fn(x) for x in items] on every core this process may use: the same list on any number of
    cores. With `sizes`, one item per task, largest first; else the items in chunks. The workers
    are forked and run pure Python on what they inherit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if cores < 2 or len(items) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(x) for x in items]
    order = sorted(range(len(items)), key=lambda i: -sizes[i]) if sizes else list(range(len(items)))
    chunk = 1 if sizes else max(1, len(items) // (8 * cores))
    with multiprocessing.get_context("fork").Pool(min(cores, len(items))) as pool:
        done = pool.map(fn, [items[i] for i in order], chunksize=chunk)
    results: list = [None] * len(items)
    for i, value in zip(order, done):
        results[i] = value
    return results


def build(links: list | None = None) -> ParallelCorpus:
    """The corpus from `aligned_verses()` (or the given links): filtered, split, de-duplicated."""
    splits: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for _, en_refs, src, tgt, kjv in links if links is not None else aligned_verses():
        ns, nt = len(src.split()), len(tgt.split())
        if not ns or not nt or not 1 / 3 <= nt / ns <= 3:
            continue
        book, chapter, _ = en_refs[0]
        splits[split_of(book, chapter)].append(Pair(src, tgt, _ref_str(en_refs), (kjv,) if kjv else ()))
    seen_src = {p.src for p in splits["train"]}
    seen_tgt = {p.tgt for p in splits["train"]}
    for s in ("dev", "test"):
        splits[s] = [p for p in splits[s] if p.src not in seen_src and p.tgt not in seen_tgt]
    return ParallelCorpus("bible:es-en", **splits)
