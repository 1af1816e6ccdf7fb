"""SentencePiece vocabularies stored in GGUF (``tokenizer.ggml.model = "llama"``): Gemma, Llama 2 and kin.

What such a file carries: ``tokenizer.ggml.tokens`` (the pieces, ``▁`` for a space), ``scores`` (float per
piece), ``token_type`` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte ``<0xXX>``),
``bos/eos/unknown/padding_token_id``, ``add_bos_token`` / ``add_eos_token`` and ``add_space_prefix``. It has
no merges and no normaliser: a SentencePiece BPE model (Kudo & Richardson 2018) merges adjacent symbols into
the vocabulary piece that ranks best, and dodai reconstructs that rank exactly as HF transformers does when it
loads the same file (``AutoTokenizer.from_pretrained(dir, gguf_file=…)``), which is the reference the tests
hold dodai to:

- **merge ranks**: a pair (a, b) can merge when a, b and a+b are all pieces. Pairs are ordered by the rank of
  the merged piece, then the longer left part, then the longer right part (HF ``generate_merges``). The rank of
  a piece is its score, except for the Gemma family, whose file lists pieces in merge order while the scores of
  its user-defined pieces (-1000) do not follow it: there the rank is the position in the file. Merging applies
  the best-ranked pair first, the leftmost on ties (the BPE loop of HF ``tokenizers``; Sennrich et al. 2016).
- **normalisation**: spaces become ``▁``; a ``▁`` is prepended to the text's first segment when
  ``add_space_prefix`` is set and the text does not already begin with one (HF's ``Metaspace``, scheme
  "first"; decoding then drops one leading space). Gemma's tokenizer never adds one.
- **added tokens**: control (3) and user-defined (4) pieces are matched whole in the raw text first, leftmost
  then longest, and the text between them is tokenised on its own. Gemma's converter stores its whitespace-run
  pieces with real spaces (``"  "``); they are spelled ``▁▁`` again and take part in merging like any piece.
- **byte fallback**: a character that is not a piece becomes its UTF-8 byte pieces ``<0xXX>``
  (or the unknown piece, consecutive unknowns fused, when the vocabulary has no byte pieces).
- **decoding**: ``▁`` -> space, runs of byte pieces -> their UTF-8 text (each byte of an invalid sequence ->
  U+FFFD), control pieces' text kept unless ``skip_special_tokens``.

``encode`` never adds BOS/EOS itself (like every dodai tokenizer); ``add_bos`` / ``add_eos`` say whether a raw
prompt should get them (HF's ``tokenizer(text)`` adds BOS for Gemma), and chat templates write ``<bos>``.
``chat_template`` is the file's, or :data:`GEMMA_TURNS` for a Gemma file without one
(``chat_template_from_file`` tells which).

Speed: merging cannot cross a ``▁`` that follows another character unless some piece contains such a
``x▁`` pair (Gemma has one, ``>▁</``), so each segment is cut into words before such spaces (outside any
occurrence of those pieces) and words are merged once and cached.
"""

from __future__ import annotations

import heapq

from dodai.errors import DodaiError

SPACE = "\u2581"  # "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")
# Gemma's turn format (Gemma Team, 2024/2025: "<start_of_turn>{user|model}\n…<end_of_turn>\n", <bos> first, a
# system prompt folded into the first user turn), written by dodai as a Jinja template for Gemma GGUF files that
# carry no tokenizer.chat_template of their own (gemma-3-270m's base conversion has none).
GEMMA_TURNS = ("{{ bos_token }}{% set ns = namespace(prefix='') %}{% for message in messages %}"
               "{% if message['role'] == 'system' %}"
               "{% set ns.prefix = ns.prefix + message['content'] | trim + '\n\n' %}"
               "{% else %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role'])"
               " + '\n' + ns.prefix + message['content'] | trim + '<end_of_turn>\n' }}{% set ns.prefix = '' %}"
               "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
_CACHE_MAX = 200_000


class GGUFSentencePiece:
    """A SentencePiece BPE vocabulary from GGUF metadata; ``encode`` / ``decode`` equal HF's tokenizer built
    from the same file (see the module docstring)."""

    def __init__(self, tokens: list[str], scores: list[float] | None, types: list[int], *, rank_by_position: bool,
                 respell_spaces: bool, add_space_prefix: bool, bos_id: int | None, eos_id: int | None,
                 unk_id: int | None, pad_id: int | None, add_bos: bool, add_eos: bool,
                 chat_template: str | None = None):
        n = len(tokens)
        if n == 0:
            raise DodaiError("GGUF vocabulary is empty")
        if respell_spaces:  # Gemma stores whitespace-run pieces as real spaces; its tokenizer spells them "▁▁"
            tokens = [SPACE * len(t) if t and " " in t and not t.strip() else t for t in tokens]
        self.pieces = tokens
        self.types = types
        self.vocab_size = n
        self.piece_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            self.piece_to_id[t] = i  # a repeated piece: the last id wins (HF builds its vocab dict the same way)
        if rank_by_position:
            self._rank = {t: -i for t, i in self.piece_to_id.items()}  # HF: {token: -index}, higher is better
        else:
            self._rank = {t: float(scores[i]) for t, i in self.piece_to_id.items()}
        # insertion order of each piece in HF's score dict: the tie-breaker after (score, len left, len right)
        self._order = {}
        for i, t in enumerate(tokens):
            self._order.setdefault(t, i)
        original = respell_spaces
        self._specials: dict[str, int] = {}  # control pieces: matched whole, "special"
        self._user: dict[str, int] = {}  # user-defined pieces matched whole (not special)
        for i, (t, ty) in enumerate(zip(tokens, types)):
            if not t:
                continue
            if ty == CONTROL:
                self._specials[t] = i
            elif ty == USER_DEFINED and not (original and t.startswith(SPACE) and not t.strip(SPACE)):
                self._user[t] = i
        self._special_ids = set(self._specials.values())
        byte_ids = [self.piece_to_id.get(f"<0x{b:02X}>") for b in range(256)]
        self.byte_ids = byte_ids if all(b is not None and types[b] == BYTE for b in byte_ids) else None
        self.unk_id = unk_id
        if self.byte_ids is None and unk_id is None:
            raise DodaiError("GGUF SentencePiece vocabulary has neither byte pieces nor an unknown piece")
        self.add_space_prefix = add_space_prefix
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.add_bos, self.add_eos = add_bos, add_eos
        self.chat_template = chat_template
        self.chat_template_from_file = chat_template is not None
        # pieces holding "x▁" (a non-▁ character before a ▁): merging may cross such a space
        self._cross = [t for t, i in self.piece_to_id.items()
                       if types[i] not in (CONTROL, BYTE) and any(a != SPACE and b == SPACE for a, b in zip(t, t[1:]))]
        self._matchers: dict[frozenset | str, tuple[dict, dict]] = {}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._byte_of = {i: int(t[3:5], 16) for i, t in enumerate(tokens) if types[i] == BYTE and len(t) == 6
                         and t.startswith("<0x") and t.endswith(">")}

    # ------------------------------------------------------------------ properties
    @property
    def special_tokens(self) -> dict[str, int]:
        """``{text: id}`` of the control pieces (HF added tokens with special=true)."""
        return dict(self._specials)

    @property
    def special_tokens_all(self) -> dict[str, int]:
        """Every piece matched whole in raw text (control and user-defined)."""
        return {**self._user, **self._specials}

    def id_to_token(self, i: int) -> str:
        if not isinstance(i, int) or not 0 <= i < self.vocab_size:
            raise DodaiError(f"token id {i!r} is not in the vocabulary (size {self.vocab_size})")
        return self.pieces[i]

    # ------------------------------------------------------------------ encoding
    def _matcher(self, allowed) -> tuple[dict, dict]:
        """(first char -> candidate lengths, longest first; text -> id) for the added pieces in play."""
        key = allowed if isinstance(allowed, str) else frozenset(allowed)
        hit = self._matchers.get(key)
        if hit is not None:
            return hit
        if allowed == "all":
            table = {**self._user, **self._specials}
        elif allowed == "none":
            table = dict(self._user)
        else:
            unknown = key - set(self._specials)
            if unknown:
                raise DodaiError(f"not special tokens of this tokenizer: {sorted(unknown)}")
            table = {**self._user, **{s: self._specials[s] for s in key}}
        lengths: dict[str, set] = {}
        for s in table:
            lengths.setdefault(s[0], set()).add(len(s))
        hit = ({c: sorted(ls, reverse=True) for c, ls in lengths.items()}, table)
        self._matchers[key] = hit
        return hit

    def _split_added(self, text: str, allowed) -> list[tuple[str, int | None]]:
        """[(segment, None) | (added piece, id)]: leftmost, then longest, match of the added pieces."""
        firsts, table = self._matcher(allowed)
        out: list[tuple[str, int | None]] = []
        start = i = 0
        n = len(text)
        while i < n:
            ls = firsts.get(text[i])
            if ls is not None:
                for ln in ls:
                    if i + ln <= n:
                        j = table.get(text[i:i + ln])
                        if j is not None:
                            if i > start:
                                out.append((text[start:i], None))
                            out.append((text[i:i + ln], j))
                            i += ln
                            start = i
                            break
                else:
                    i += 1
                continue
            i += 1
        if start < n:
            out.append((text[start:], None))
        return out

    def _words(self, s: str) -> list[str]:
        """Cut a normalised segment before each ▁ that follows another character, except inside an
        occurrence of a piece that spans such a place (merging never crosses the remaining cuts)."""
        cuts = [i for i in range(1, len(s)) if s[i] == SPACE and s[i - 1] != SPACE]
        if not cuts:
            return [s]
        if self._cross:
            banned = set()
            for c in self._cross:
                k = s.find(c)
                while k >= 0:
                    banned.update(range(k + 1, k + len(c)))
                    k = s.find(c, k + 1)
            cuts = [i for i in cuts if i not in banned]
        out, prev = [], 0
        for i in cuts:
            out.append(s[prev:i])
            prev = i
        out.append(s[prev:])
        return out

    def _key(self, a: str, b: str):
        """Merge priority of the pair (a, b), smaller first, or None when it is not a merge."""
        ab = a + b
        r = self._rank.get(ab)
        if r is None or a not in self._rank or b not in self._rank:
            return None
        return (-r, -len(a), -len(b), self._order[ab])

    def _bpe(self, word: str) -> tuple[int, ...]:
        """One word -> ids: characters (bytes for unknown ones), then merges best-ranked first, leftmost on ties."""
        p2i = self.piece_to_id
        syms: list[str] = []
        for ch in word:
            if ch in p2i:
                syms.append(ch)
            elif self.byte_ids is not None:
                syms.extend(self.pieces[self.byte_ids[b]] for b in ch.encode("utf-8"))
            else:
                syms.append(ch)  # unknown: stays a symbol of its own
        n = len(syms)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        heap: list = []
        key = self._key
        for i in range(n - 1):
            k = key(syms[i], syms[i + 1])
            if k is not None:
                heap.append((k, i, syms[i] + syms[i + 1]))
        heapq.heapify(heap)
        while heap:
            k, i, merged = heapq.heappop(heap)
            j = nxt[i] if syms[i] else n
            if j >= n or syms[i] + syms[j] != merged:
                continue  # stale: one side has changed since the pair was queued
            syms[i], syms[j] = merged, ""
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            p = prv[i]
            if p >= 0:
                k2 = key(syms[p], merged)
                if k2 is not None:
                    heapq.heappush(heap, (k2, p, syms[p] + merged))
            if nxt[i] < n:
                k2 = key(merged, syms[nxt[i]])
                if k2 is not None:
                    heapq.heappush(heap, (k2, i, merged + syms[nxt[i]]))
        out: list[int] = []
        i = 0
        while i < n:
            s = syms[i]
            j = p2i.get(s)
            if j is None:  # an unknown character (no byte pieces): fuse runs of them into one unknown id
                if not (out and out[-1] == self.unk_id):
                    out.append(self.unk_id)
            else:
                out.append(j)
            i = nxt[i]
        return tuple(out)

    def encode(self, text: str, allowed_special="all") -> list[int]:
        """Text -> ids (no BOS/EOS: see ``add_bos``). ``allowed_special``: "all" (default, HF behaviour),
        "none" (control strings are plain text), or a set of control strings to match."""
        if not isinstance(text, str):
            raise DodaiError(f"encode expects str, got {type(text).__name__}")
        out: list[int] = []
        first = True
        cache = self._cache
        for seg, sid in self._split_added(text, allowed_special):
            if sid is not None:
                out.append(sid)
                first = False
                continue
            s = seg.replace(" ", SPACE)
            if first and self.add_space_prefix and not s.startswith(SPACE):
                s = SPACE + s  # HF's Metaspace "first": only where the text begins, and only if no ▁ is there
            first = False
            for w in self._words(s):
                ids = cache.get(w)
                if ids is None:
                    ids = self._bpe(w)
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[w] = ids
                out.extend(ids)
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode with control strings treated as plain text."""
        return self.encode(text, allowed_special="none")

    # ------------------------------------------------------------------ decoding
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        parts: list[str] = []
        pending = bytearray()

        def flush():
            if pending:
                try:
                    parts.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append("\ufffd" * len(pending))
                pending.clear()

        n = self.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise DodaiError(f"token id {i!r} is not in the vocabulary (size {n})")
            b = self._byte_of.get(i)
            if b is not None:
                pending.append(b)
                continue
            flush()
            if skip_special_tokens and i in self._special_ids:
                continue
            parts.append(self.pieces[i].replace(SPACE, " "))
        flush()
        text = "".join(parts)
        if self.add_space_prefix and text.startswith(" "):
            text = text[1:]  # the prefix space encoding added (HF's decoder strips one leading space)
        return text

    def token_bytes(self, i: int) -> bytes:
        """The bytes a token stands for (a byte piece: its byte)."""
        b = self._byte_of.get(i)
        if b is not None:
            return bytes([b])
        return self.id_to_token(i).replace(SPACE, " ").encode("utf-8")

    def save(self, path):
        raise DodaiError("a GGUF SentencePiece vocabulary cannot be saved as tokenizer.json yet")

    def __repr__(self) -> str:
        return f"GGUFSentencePiece(vocab_size={self.vocab_size}, add_bos={self.add_bos})"
