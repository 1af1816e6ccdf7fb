"""WordPiece vocabulary training, BERT-style (R4.6, training side).

The algorithm (the likelihood-score WordPiece of Schuster & Nakajima 2012, "Japanese and Korean
Voice Search"; the score form is the one the Hugging Face course writes down):

1. Normalise and pre-tokenise the text exactly as :class:`WordPieceTokenizer` does when it encodes
   (BERT's basic tokenizer), and count the words.
2. The initial vocabulary is the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` followed by the
   alphabet: every character that starts a word, and ``##c`` for every character ``c`` seen inside a
   word (``limit_alphabet`` keeps only the most frequent characters; words with other characters are
   left out of training and will encode as ``[UNK]``). Each word starts split into its characters,
   ``w ##o ##r ##d``.
3. Repeatedly merge the adjacent pair ``(a, b)`` that most increases the likelihood of the training
   data under a unigram model of the units, rather than BPE's most *frequent* pair. Two scores
   (counts weighted by word frequency, N = all unit occurrences):

       score="pmi"   count(ab) / (count(a) · count(b))            (the form in the HF course)
       score="gain"  count(ab) · log(N · count(ab) / (count(a) · count(b)))   (default)

   "pmi" is the per-occurrence likelihood ratio: it prefers pairs whose parts rarely occur apart,
   however rare the pair, and on small vocabularies spends merges on rare character pairs (about
   2.4x the tokens per word of HF's trainer at vocab 1000 on the python-docs corpus). "gain"
   multiplies that log-ratio by how often the pair occurs — the first-order change in the corpus
   log-likelihood when every ``a b`` becomes one unit — and lands within a few % of HF's
   tokens per word (see tests/test_wordpiece_train.py). The merged unit is ``a`` + ``b`` without
   its ``##``. Ties go to the more frequent pair, then to the lexicographically larger pair
   (deterministic). Stop when the vocabulary reaches ``vocab_size`` or no pair is left.

The learned vocabulary is used with greedy longest-match-first encoding (the standard WordPiece
encoder), so it is a :class:`WordPieceTokenizer` whose ``tokenizer.json`` HF ``tokenizers`` loads and
encodes identically. (HF's own ``WordPieceTrainer`` instead runs BPE training with a ``##`` prefix;
its vocabularies differ from this one but are of comparable quality — see the tests.)

``train_reference`` is the plain loop (recount every pair after every merge); ``train_vocab`` keeps pair
counts incrementally, touching only the words that contain the merged pair, and is tested equal to it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from dodai.errors import DodaiError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"


def _merged(a: str, b: str) -> str:
    return a + (b[len(PREFIX):] if b.startswith(PREFIX) else b)


def _key(pair: tuple[str, str], n_pair: int, units: Counter, n_total: int,
         score: str) -> tuple[float, int, tuple[str, str]]:
    """Sort key of a candidate merge: its score, then the pair count, then the pair itself."""
    ratio = n_pair / (units[pair[0]] * units[pair[1]])
    if score == "pmi":
        return ratio, n_pair, pair
    return n_pair * math.log(ratio * n_total), n_pair, pair


def _initial(word_counts: dict[str, int], limit_alphabet: int | None,
             max_input_chars_per_word: int) -> tuple[list[str], list[list[str]], list[int]]:
    """Alphabet (sorted, most-frequent subset if limited) and the initial character splits."""
    chars: Counter = Counter()
    for w, n in word_counts.items():
        if len(w) <= max_input_chars_per_word:
            for c in w:
                chars[c] += n
    keep = set(chars)
    if limit_alphabet is not None and len(keep) > limit_alphabet:
        keep = {c for c, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:limit_alphabet]}
    alphabet: set[str] = set()
    splits, freqs = [], []
    for w in sorted(word_counts):
        if len(w) > max_input_chars_per_word or not set(w) <= keep:
            continue
        units = [w[0]] + [PREFIX + c for c in w[1:]]
        alphabet.update(units)
        splits.append(units)
        freqs.append(word_counts[w])
    return sorted(alphabet), splits, freqs


def _apply(units: list[str], a: str, b: str, ab: str) -> list[str]:
    out, i = [], 0
    while i < len(units):
        if i + 1 < len(units) and units[i] == a and units[i + 1] == b:
            out.append(ab)
            i += 2
        else:
            out.append(units[i])
            i += 1
    return out


def train_reference(word_counts: dict[str, int], n_merges: int, limit_alphabet: int | None = None,
                    max_input_chars_per_word: int = 100, score: str = "gain") -> list[str]:
    """The textbook loop: recount units and pairs over all words for every merge. Returns the
    learned vocabulary (alphabet, then merged units in merge order), without special tokens."""
    alphabet, splits, freqs = _initial(word_counts, limit_alphabet, max_input_chars_per_word)
    vocab = list(alphabet)
    for _ in range(n_merges):
        units: Counter = Counter()
        pairs: Counter = Counter()
        for s, n in zip(splits, freqs):
            for u in s:
                units[u] += n
            for p in zip(s, s[1:]):
                pairs[p] += n
        if not pairs:
            break
        n_total = sum(units.values())
        a, b = max((_key(p, c, units, n_total, score) for p, c in pairs.items()))[2]
        ab = _merged(a, b)
        splits = [_apply(s, a, b, ab) for s in splits]
        if ab not in vocab:
            vocab.append(ab)
    return vocab


def _pair_counts(s: list[str]) -> dict[tuple[str, str], int]:
    d: dict[tuple[str, str], int] = {}
    for p in zip(s, s[1:]):
        d[p] = d.get(p, 0) + 1
    return d


class _PairScores:
    """Every live pair's merge score at once, in numpy: the fast half of ``max(_key(...))``.

    Pairs get slots (unit ids a, b and the pair count); unit counts sit in a second array. ``best``
    computes all scores in float64, keeps the pairs within a safe margin of the largest (the only ones
    that can be the exact maximum: numpy's rounding differs from Python's by a few ulps at most) and
    lets the exact Python ``_key`` choose among them, so the chosen pair is exactly the plain loop's.
    """

    def __init__(self, units: Counter, pairs: Counter, score: str):
        import numpy as np

        self.np, self.score = np, score
        self.uid: dict[str, int] = {}
        self.ucount = np.zeros(max(16, 2 * len(units)), dtype=np.float64)
        for u, c in units.items():
            i = self._unit(u)  # (may grow the array: index after the call)
            self.ucount[i] = c
        self.slot: dict[tuple[str, str], int] = {}
        self.pair_of: list[tuple[str, str]] = []
        cap = max(16, 2 * len(pairs))
        self.a, self.b = np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64)
        self.count = np.zeros(cap, dtype=np.float64)
        for p, c in pairs.items():
            i = self._slot(p)
            self.count[i] = c

    def _unit(self, u: str) -> int:
        i = self.uid.get(u)
        if i is None:
            i = self.uid[u] = len(self.uid)
            if i >= len(self.ucount):
                self.ucount = self.np.concatenate([self.ucount, self.np.zeros_like(self.ucount)])
        return i

    def _slot(self, p: tuple[str, str]) -> int:
        i = self.slot.get(p)
        if i is None:
            i = self.slot[p] = len(self.pair_of)
            self.pair_of.append(p)
            if i >= len(self.count):
                np = self.np
                self.a, self.b = np.concatenate([self.a, self.a]), np.concatenate([self.b, self.b])
                self.count = np.concatenate([self.count, np.zeros_like(self.count)])
            self.a[i], self.b[i] = self._unit(p[0]), self._unit(p[1])
        return i

    def sync(self, units: Counter, pairs: Counter, touched_units: set, touched_pairs: set) -> None:
        for u in touched_units:
            i = self._unit(u)
            self.ucount[i] = units.get(u, 0)
        for p in touched_pairs:
            i = self._slot(p)
            self.count[i] = pairs.get(p, 0)

    def best(self, units: Counter, pairs: Counter, n_total: int) -> tuple[str, str]:
        np = self.np
        k = len(self.pair_of)
        c = self.count[:k]
        live = np.flatnonzero(c > 0)
        c = c[live]
        prod = self.ucount[self.a[live]] * self.ucount[self.b[live]]
        with np.errstate(divide="ignore"):
            if self.score == "pmi":
                s = c / prod
                top = s.max()
                margin = 1e-9 * abs(top)
            else:
                s = c * np.log(c / prod * n_total)
                top = s.max()
                margin = 1e-9 * (abs(top) + c.max())  # error <= count * (a few 1e-15), far below this
        cands = live[s >= top - margin]
        return max(_key(self.pair_of[i], pairs[self.pair_of[i]], units, n_total, self.score) for i in cands)[2]


def train_vocab(word_counts: dict[str, int], n_merges: int, limit_alphabet: int | None = None,
                max_input_chars_per_word: int = 100, score: str = "gain", progress: bool = False) -> list[str]:
    """Same result as :func:`train_reference`, with incremental unit and pair counts and the best pair
    found by :class:`_PairScores` (all scores at once in numpy, exact tie-break in Python)."""
    alphabet, splits, freqs = _initial(word_counts, limit_alphabet, max_input_chars_per_word)
    vocab, seen = list(alphabet), set(alphabet)
    units: Counter = Counter()
    pairs: Counter = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words containing it
    for wi, (s, n) in enumerate(zip(splits, freqs)):
        for u in s:
            units[u] += n
        for p in zip(s, s[1:]):
            pairs[p] += n
            where[p].add(wi)
    n_total = sum(units.values())  # all unit occurrences, the N of the gain score
    table = _PairScores(units, pairs, score)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_merges, desc="wordpiece merges", unit="merge", leave=False)
    for _ in range(n_merges):
        if not pairs:
            break
        a, b = table.best(units, pairs, n_total)
        ab = _merged(a, b)
        touched_units, touched_pairs = {a, b, ab}, {(a, b)}
        for wi in where.pop((a, b), ()):
            s, n = splits[wi], freqs[wi]
            t = splits[wi] = _apply(s, a, b, ab)
            k = n * (len(s) - len(t))  # k/n merges in this word: only a, b and ab change count
            n_total -= k
            units[a] -= k
            units[b] -= k
            units[ab] += k
            old, new = _pair_counts(s), _pair_counts(t)
            for p, c in old.items():  # pairs that changed count; the word leaves where[p] for vanished ones
                d = new.get(p, 0) - c
                if d:
                    pairs[p] += d * n
                    if pairs[p] <= 0:
                        del pairs[p]
                    if p not in new and p != (a, b):  # (where[(a, b)] is gone already)
                        where[p].discard(wi)
            for p, c in new.items():
                if p not in old:
                    pairs[p] += c * n
                    where[p].add(wi)
            touched_pairs.update(old)
            touched_pairs.update(new)
        pairs.pop((a, b), None)
        table.sync(units, pairs, touched_units, touched_pairs)
        if ab not in seen:
            seen.add(ab)
            vocab.append(ab)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return vocab


def count_words(texts: Iterable[str] | str, lowercase: bool = True, strip_accents: bool | None = None) -> Counter:
    """Word counts after BERT's normalisation and pre-tokenisation (the encoder's own code)."""
    from dodai.tokenizers.wordpiece import WordPieceTokenizer

    probe = WordPieceTokenizer({t: i for i, t in enumerate(SPECIALS)}, lowercase=lowercase,
                               strip_accents=strip_accents)
    counts: Counter = Counter()
    for text in [texts] if isinstance(texts, str) else texts:
        for line in text.splitlines():
            counts.update(probe.pre_tokenize(probe.normalize(line)))
    return counts


def train(texts: Iterable[str] | str, vocab_size: int, *, special_tokens: Iterable[str] = SPECIALS,
          limit_alphabet: int | None = None, lowercase: bool = True, strip_accents: bool | None = None,
          max_input_chars_per_word: int = 100, score: str = "gain", reference: bool = False,
          progress: bool = False):
    """Learn a :class:`WordPieceTokenizer` of at most ``vocab_size`` tokens (specials first, then the
    alphabet, then merges; fewer when the text runs out of pairs). ``special_tokens`` must include
    ``[PAD] [UNK] [CLS] [SEP]``. ``score``: ``"gain"`` (default) or ``"pmi"`` (see the module docstring)."""
    from dodai.tokenizers.wordpiece import WordPieceTokenizer

    specials = list(dict.fromkeys(special_tokens))
    if any(not isinstance(s, str) or not s for s in specials):
        raise DodaiError("special tokens must be non-empty strings")
    missing = [t for t in SPECIALS[:4] if t not in specials]
    if missing:
        raise DodaiError(f"WordPiece training needs the special tokens {' '.join(missing)}")
    if score not in ("gain", "pmi"):
        raise DodaiError(f"WordPiece score must be 'gain' or 'pmi', got {score!r}")
    if limit_alphabet is not None and limit_alphabet < 1:
        raise DodaiError(f"limit_alphabet must be positive, got {limit_alphabet}")
    counts = count_words(texts, lowercase, strip_accents)
    if not counts:
        raise DodaiError("no training text (empty corpus)")
    alphabet, _, _ = _initial(counts, limit_alphabet, max_input_chars_per_word)
    if vocab_size < len(specials) + len(alphabet):
        raise DodaiError(f"vocab size {vocab_size} is too small: {len(specials)} special tokens + an "
                         f"alphabet of {len(alphabet)} units need {len(specials) + len(alphabet)} "
                         f"(or use limit_alphabet)")
    n_merges = vocab_size - len(specials) - len(alphabet)
    fn = train_reference if reference else train_vocab
    kw = {} if reference else {"progress": progress}
    learned = fn(counts, n_merges, limit_alphabet, max_input_chars_per_word, score, **kw)
    tokens = specials + [t for t in learned if t not in set(specials)]
    return WordPieceTokenizer({t: i for i, t in enumerate(tokens)}, lowercase=lowercase,
                              strip_accents=strip_accents, max_input_chars_per_word=max_input_chars_per_word,
                              extra_special_tokens=tuple(s for s in specials if s not in SPECIALS))
