"""BERT encoder: parity with HF BertModel (random init), SDPA vs the eager oracle, invariants, file
round trips, hostile configs/weights, and real all-MiniLM-L6-v2 embeddings vs sentence-transformers."""

from __future__ import annotations

import json
import os

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.bert import BertConfig, BertModel, SentenceEncoder, hf_names, load_sentence_encoder
from dodai.tokenizers.wordpiece import WordPieceTokenizer

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # padding in the batch
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[0, 5:] = 1
    return ids, mask, types


@pytest.fixture(scope="module")
def hf_tiny():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY, hidden_act="gelu", attn_implementation="eager")
    return transformers.BertModel(cfg).eval()


def test_random_init_parity_with_hf_bert(hf_tiny):
    ours = BertModel(BertConfig(**TINY)).eval()
    sd = {k: v for k, v in hf_tiny.state_dict().items() if k in hf_names(ours.config)}
    ours.load_hf_state_dict(sd)
    ids, mask, types = _batch()
    with torch.no_grad():
        want = hf_tiny(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden, pooled = ours(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()  # padded positions are computed too, but only real tokens are meaningful
    torch.testing.assert_close(hidden[real], want.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, want.pooler_output, atol=1e-5, rtol=1e-5)
    # and without any mask / token types
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], hf_tiny(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_sdpa_path_matches_eager_reference():
    torch.manual_seed(1)
    m = BertModel(BertConfig(**TINY)).eval()
    ids, mask, types = _batch(1)
    with torch.no_grad():
        fast = m(ids, attention_mask=mask, token_type_ids=types)[0]
        for layer in m.layers:
            layer.use_reference_attention = True
        slow = m(ids, attention_mask=mask, token_type_ids=types)[0]
    real = mask.bool()
    torch.testing.assert_close(fast[real], slow[real], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(2)
    m = BertModel(BertConfig(**TINY)).eval()
    ids = torch.randint(1, 99, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 5)], 1).long()
    with torch.no_grad():
        torch.testing.assert_close(m(padded, attention_mask=mask)[0][:, :6], m(ids)[0], atol=1e-5, rtol=1e-5)


def _tiny_encoder(seed=3) -> SentenceEncoder:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat", ".", "a",
             "##s", "run", "big"]
    tok = WordPieceTokenizer({w: i for i, w in enumerate(words)})
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**{**TINY, "vocab_size": len(words)}))
    return SentenceEncoder(tok, model, max_seq_length=8)


def test_sentence_encoder_batched_equals_one_by_one_and_keeps_order():
    enc = _tiny_encoder()
    texts = ["the cat", "a big dog sat on the mat .", "cats run", "the", "dog dog dog dog dog dog dog dog dog",
             "big mat"]
    together = enc.encode(texts, batch_size=4)
    alone = torch.cat([enc.encode([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(len(texts)))
    # truncation at max_seq_length: anything after the 6th word token cannot change the vector
    a, b = enc.encode(["dog dog dog dog dog dog cat", "dog dog dog dog dog dog mat mat"])
    torch.testing.assert_close(a, b)


def test_save_and_load_roundtrip_and_hf_reads_it(tmp_path):
    torch.manual_seed(4)
    m = BertModel(BertConfig(**TINY)).eval()
    m.save(tmp_path)
    back = BertModel.from_folder(tmp_path)
    ids, mask, types = _batch(2)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, types)[0], m(ids, mask, types)[0])
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(m(ids, mask, types)[0][real].detach(), want[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [
    {"model_type": "roberta"}, {"position_embedding_type": "relative_key"}, {"is_decoder": True},
    {"hidden_act": "swish"}, {"hidden_size": 30, "num_attention_heads": 4}, {"num_hidden_layers": 0},
    {"some_new_setting": 1}, {"vocab_size": "big"},
])
def test_unsupported_configs_are_dodai_errors(cfg):
    with pytest.raises(DodaiError):
        BertConfig.from_hf({**TINY, **cfg})
    with pytest.raises(DodaiError):
        BertConfig.from_hf([1, 2])


def test_bad_weights_are_dodai_errors(tmp_path):
    from dodai.weights.safetensors import save_file

    m = BertModel(BertConfig(**TINY))
    m.save(tmp_path)
    sd = m.hf_state_dict()
    sd["encoder.layer.1.intermediate.dense.weight"] = torch.zeros(36, 32)  # wrong shape
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(DodaiError, match="intermediate"):
        BertModel.from_folder(tmp_path)
    del sd["encoder.layer.1.intermediate.dense.weight"]  # missing tensor
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(DodaiError, match="missing"):
        BertModel.from_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DodaiError):
        BertModel.from_folder(tmp_path)
    with pytest.raises(DodaiError):
        BertModel(BertConfig(**TINY))(torch.zeros(1, 65, dtype=torch.long))  # longer than max positions


# -- real all-MiniLM-L6-v2 ---------------------------------------------------------------------------

SENTENCES = [
    "A man is playing a guitar.", "Someone is making music with a stringed instrument.",
    "The stock market fell sharply on Tuesday.", "Le chat dort sur le canapé.", "日本語の文章も埋め込めます。",
    "", "   ", "!!!", "How do I reset my password?", "What's the capital of France? Paris, of course.",
    "Ångström units measure tiny distances; naïve café owners don't care.",
    "Transformers use self-attention to relate every token to every other token in the sequence.",
    "emoji 😀 and URLs https://example.com/x?y=1 and numbers 3.14159",
    "It was the best of times, it was the worst of times, it was the age of wisdom, " * 3,
    "word " * 300,  # longer than max_seq_length (256 tokens): truncated the same way
    " ".join(f"token{i}" for i in range(200)),
    "Short.", "The quick brown fox jumps over the lazy dog.",
    "In 1905 Einstein published four groundbreaking papers on the photoelectric effect, Brownian motion, "
    "special relativity, and mass-energy equivalence, which changed physics forever.",
    "中文句子和English混合的文本。",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_sentence_encoder(minilm_dir)


def test_minilm_matches_sentence_transformers(minilm, minilm_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu")
    want = torch.as_tensor(ref.encode(SENTENCES, batch_size=8, convert_to_numpy=True))
    got = minilm.encode(SENTENCES, batch_size=8)
    assert got.shape == (len(SENTENCES), 384)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert cos.min().item() >= 0.99999, cos
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(SENTENCES)))
    assert minilm.max_seq_length == ref.max_seq_length == 256


def test_minilm_similarity_is_semantic(minilm):
    e = minilm.encode(SENTENCES[:3])
    assert (e[0] @ e[1]).item() > (e[0] @ e[2]).item() + 0.2


def test_load_sentence_encoder_errors(tmp_path):
    with pytest.raises(DodaiError):
        load_sentence_encoder(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DodaiError):
        load_sentence_encoder(tmp_path / "f.txt")


def test_minilm_loads_with_strict_shapes(minilm_dir):
    cfg = json.loads((minilm_dir / "config.json").read_text())
    assert BertConfig.from_hf(cfg).hidden_size == 384
    assert os.path.getsize(minilm_dir / "model.safetensors") > 80e6
