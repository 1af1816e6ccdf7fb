"""SentencePiece vocabularies in GGUF (``tokenizer.ggml.model = "llama"``) on small files built here: dodai's
ids equal those of HF's tokenizer built from the same file (``AutoTokenizer.from_pretrained(dir, gguf_file=…)``),
for both conventions HF applies: score-ranked merges with a prefix space (Llama-style files) and position-ranked
merges, whitespace-run pieces respelled, no prefix space (Gemma files). The real Gemma 3 vocabulary is checked
in tests/test_gemma3_real.py."""

from __future__ import annotations

import pytest

from dodai.errors import DodaiError

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
pytest.importorskip("gguf")

ALPHABET = list("abcdefghij XYZ 0123\n\t'.,!?-_()<>/") + ["日", "本", "語", "é", "🙂", "  ", "\u00a0", "\x04", "▁",
                                                          "the", " the", "ing", "<ctl>", "<|u|>", "\n\n"]


@pytest.fixture(scope="module")
def trained():
    """A small SentencePiece BPE model (byte fallback) trained on dodai's built-in python-docs corpus."""
    import io

    from dodai.data.corpora import corpus_documents

    text = "\n".join(corpus_documents("python-docs")[:400])
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()), model_writer=buf, vocab_size=600,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                   split_digits=True, num_threads=1, minloglevel=2)
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    pieces = [proc.id_to_piece(i) for i in range(proc.get_piece_size())]
    scores = [proc.get_score(i) for i in range(proc.get_piece_size())]
    types = [2 if proc.is_unknown(i) else 3 if proc.is_control(i) else 6 if proc.is_byte(i) else 1
             for i in range(proc.get_piece_size())]
    return pieces, scores, types


def _write(tmp_path, arch, pieces, scores, types, extra=None, name="v.gguf"):
    from dodai.weights.gguf import write_gguf

    md = {"general.architecture": arch, "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces,
          "tokenizer.ggml.scores": [float(s) for s in scores], "tokenizer.ggml.token_type": types,
          "tokenizer.ggml.bos_token_id": pieces.index("<s>"), "tokenizer.ggml.eos_token_id": pieces.index("</s>"),
          "tokenizer.ggml.unknown_token_id": pieces.index("<unk>"), **(extra or {})}
    write_gguf(tmp_path / name, md, {}, types={"tokenizer.ggml.token_type": "array[int32]"})
    return tmp_path / name


def _both(path):
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return tokenizer_from_gguf(path), hf


def _check(ours, hf, texts):
    for t in texts:
        assert ours.encode(t) == hf.encode(t, add_special_tokens=False), repr(t)


def _property(ours, hf):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(st.sampled_from(ALPHABET), max_size=30).map("".join))
    def check(text):
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False)

    check()


TEXTS = ["Hello world", "def f(x):\n    return x.value  # the thing", "  two  leading", "日本語 and é 🙂",
         "trailing   ", "", " ", "12345 3.14", "a\tb\n\nc", "the thing's <ctl> and <|u|>"]


def test_llama_style_vocabulary_matches_hf(tmp_path, trained):
    pieces, scores, types = trained
    pieces = pieces + ["<ctl>", "<|u|>"]
    scores = scores + [0.0, 0.0]
    types = types + [3, 4]  # a control piece and a user-defined one, matched whole
    ours, hf = _both(_write(tmp_path, "llama", pieces, scores, types))
    assert ours.add_space_prefix and ours.add_bos and not ours.add_eos
    _check(ours, hf, TEXTS)
    _property(ours, hf)
    ids = ours.encode("the thing's <ctl>")
    assert ours.decode(ids) == hf.decode(ids)
    assert [ours.bos_id] + ours.encode("Hello") == hf.encode("Hello")


def test_gemma_style_vocabulary_matches_hf(tmp_path, trained):
    """Gemma conventions: merges ranked by file position, whitespace runs stored with real spaces (their score
    -1000 would rank them last, their position ranks them first), user-defined newlines and tabs."""
    pieces, scores, types = trained
    extra = ["\n", "\n\n", "\t", "  ", "   ", "<ctl>", "<|u|>"]
    pieces = pieces[:4] + extra + pieces[4:]
    scores = scores[:4] + [-1000.0] * len(extra) + scores[4:]
    types = types[:4] + [4, 4, 4, 4, 4, 3, 4] + types[4:]
    ours, hf = _both(_write(tmp_path, "gemma3", pieces, scores, types,
                            {"tokenizer.ggml.add_space_prefix": False}))
    assert not ours.add_space_prefix and ours.chat_template and not ours.chat_template_from_file
    _check(ours, hf, TEXTS)
    _property(ours, hf)
    assert ours.encode("a  b") == hf.encode("a  b", add_special_tokens=False)
    assert ours.decode(ours.encode("x   y\n\nz")) == "x   y\n\nz"


def test_decode_of_bytes_and_specials(tmp_path, trained):
    pieces, scores, types = trained
    ours, hf = _both(_write(tmp_path, "llama", pieces, scores, types))
    byte = [pieces.index(f"<0x{b:02X}>") for b in "🙂".encode()]
    assert ours.decode(byte) == hf.decode(byte) == "🙂"
    assert ours.decode(byte[:2]) == hf.decode(byte[:2])  # an incomplete character: U+FFFD per byte, as HF
    assert ours.decode([1, 2]) == hf.decode([1, 2])
    assert ours.decode([1, 2], skip_special_tokens=True) == hf.decode([1, 2], skip_special_tokens=True)
    with pytest.raises(DodaiError):
        ours.decode([len(pieces)])


@pytest.mark.parametrize("bad", [
    {"tokenizer.ggml.scores": None}, {"tokenizer.ggml.scores": [0.0]}, {"tokenizer.ggml.bos_token_id": 10 ** 6},
    {"tokenizer.ggml.add_bos_token": 3}, {"tokenizer.ggml.token_type": [1]},
])
def test_bad_vocabulary_metadata_is_dodai_error(trained, bad):
    from dodai.tokenizers.gguf_vocab import tokenizer_from_metadata

    pieces, scores, types = trained
    md = {"general.architecture": "llama", "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces,
          "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types}
    md.update(bad)
    md = {k: v for k, v in md.items() if v is not None}
    with pytest.raises(DodaiError):
        tokenizer_from_metadata(md)
