"""BERT heads and MLM pre-training: HF parity (BertForMaskedLM, BertForSequenceClassification, random init,
same state dict), the fast MLM loss vs the full-logits oracle, BERT's 80/10/10 masking (statistics, never a
special or padded position, property tests), packing, a tiny pre-training run that learns, file round
trips (also read by HF), hostile inputs, and our macro-F1 against scikit-learn."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.models.bert import BertConfig, BertModel
from dodai.models.bert_heads import (
    IGNORE_INDEX,
    BertForMaskedLM,
    BertForSequenceClassification,
    accuracy,
    finetune_classifier,
    macro_f1,
    predict,
)
from dodai.train.mlm import fill_mask, mask_tokens, mlm_eval_loss, pack_blocks, pretrain_mlm


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: a second intra-op thread only adds synchronisation (and spins on a busy machine)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return ids, mask


# -- HF parity -------------------------------------------------------------------------------------


def test_masked_lm_parity_with_hf_random_init():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**TINY, attn_implementation="eager")).eval()
    with torch.no_grad():  # non-trivial head weights (HF zero-inits the bias and unit-inits the LayerNorm)
        hf.cls.predictions.bias.normal_()
        hf.cls.predictions.transform.LayerNorm.weight.normal_()
        hf.cls.predictions.transform.LayerNorm.bias.normal_()
    ours = BertForMaskedLM(BertConfig(**TINY)).eval()
    ours.load_hf_state_dict(hf.state_dict())
    ids, mask = _batch()
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2], labels[1, 4], labels[2, 1] = 7, 50, 98
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=labels)
        logits, loss = ours(ids, attention_mask=mask, labels=labels)
        fast = ours.mlm_loss(ids, labels, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(logits[real], want.logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, want.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, want.loss, atol=1e-5, rtol=1e-5)
    # and our HF-named export is exactly HF's state dict (minus the tied decoder copies)
    sd = ours.hf_state_dict()
    for k, v in hf.state_dict().items():
        if not k.startswith("cls.predictions.decoder."):
            torch.testing.assert_close(sd[k], v, atol=0, rtol=0)


def test_sequence_classification_parity_with_hf_cls_pooler():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(
        transformers.BertConfig(**TINY, num_labels=5, attn_implementation="eager")).eval()
    ours = BertForSequenceClassification(BertConfig(**TINY), num_labels=5, pooling="cls").eval()
    ours.load_hf_state_dict(hf.state_dict())
    ids, mask = _batch(1)
    y = torch.tensor([0, 3, 4])
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=y)
        logits, loss = ours(ids, attention_mask=mask, labels=y)
    torch.testing.assert_close(logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, want.loss, atol=1e-5, rtol=1e-5)


def test_mean_pooling_classifier_matches_hf_encoder_plus_mean():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    hf = transformers.BertModel(transformers.BertConfig(**TINY, attn_implementation="eager")).eval()
    ours = BertForSequenceClassification(BertConfig(**TINY), num_labels=3, pooling="mean").eval()
    assert ours.bert.pooler is None  # mean pooling carries no pooler weights
    sd = {"bert." + k: v for k, v in hf.state_dict().items() if not k.startswith("pooler.")}
    sd["classifier.weight"], sd["classifier.bias"] = torch.randn(3, 32), torch.randn(3)
    ours.load_hf_state_dict(sd)
    ids, mask = _batch(2)
    with torch.no_grad():
        h = hf(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, C)
        m = mask[..., None].float()
        want = ((h * m).sum(1) / m.sum(1)) @ sd["classifier.weight"].T + sd["classifier.bias"]
        torch.testing.assert_close(ours(ids, attention_mask=mask)[0], want, atol=1e-5, rtol=1e-5)


def test_saved_mlm_folder_loads_in_hf_and_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    ours = BertForMaskedLM(BertConfig(**TINY)).eval()
    with torch.no_grad():
        ours.decoder_bias.normal_()
    ours.save(tmp_path)
    back = BertForMaskedLM.from_folder(tmp_path)
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask = _batch(3)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask)[0]
        torch.testing.assert_close(back(ids, attention_mask=mask)[0], a, atol=0, rtol=0)
        real = mask.bool()
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits[real], a[real], atol=1e-5, rtol=1e-5)


def test_hostile_head_inputs():
    cfg = BertConfig(**TINY)
    m = BertForMaskedLM(cfg)
    sd = m.hf_state_dict()
    bad = dict(sd, **{"cls.predictions.decoder.weight": torch.randn(99, 32)})
    with pytest.raises(DodaiError, match="tied"):
        m.load_hf_state_dict(bad)
    with pytest.raises(DodaiError):
        m.load_hf_state_dict({k: v for k, v in sd.items() if k != "cls.predictions.bias"})
    with pytest.raises(DodaiError):
        m.load_hf_state_dict(dict(sd, **{"cls.predictions.bias": torch.zeros(98)}))
    with pytest.raises(DodaiError):
        BertForSequenceClassification(cfg, num_labels=1)
    with pytest.raises(DodaiError):
        BertForSequenceClassification(cfg, num_labels=3, pooling="max")
    with pytest.raises(DodaiError):
        mask_tokens(torch.zeros(5, dtype=torch.long), mask_id=4, special_ids=[0], vocab_size=10)
    with pytest.raises(DodaiError):
        pack_blocks([[5, 6]], block_size=8, cls_id=2, sep_id=3)
    with pytest.raises(DodaiError):
        finetune_classifier(BertForSequenceClassification(cfg, 3, pooling="mean"), [[2, 5, 3]], [7], pad_id=0)


def test_mlm_loss_with_nothing_selected_is_zero_not_nan():
    m = BertForMaskedLM(BertConfig(**TINY))
    ids, mask = _batch()
    loss = m.mlm_loss(ids, torch.full_like(ids, IGNORE_INDEX), attention_mask=mask)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


# -- masking ---------------------------------------------------------------------------------------

SPECIALS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]


def test_mask_tokens_statistics_80_10_10():
    V = 1000
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (400, 128), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[::3, 100:] = 0  # padding
    attn = (ids != 0).long()
    before = ids.clone()
    inp, labels = mask_tokens(ids, mask_id=4, special_ids=SPECIALS, vocab_size=V, attention_mask=attn,
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids, before)  # input untouched
    eligible = (ids >= 5) & attn.bool()
    sel = labels != IGNORE_INDEX
    assert not (sel & ~eligible).any()  # never a special token or padding
    assert torch.equal(labels[sel], ids[sel])
    assert torch.equal(inp[~sel], ids[~sel])  # unselected positions are unchanged
    n_sel, n_elig = int(sel.sum()), int(eligible.sum())
    # binomial standard errors are ~0.05 % of n here; 5 sigma bands
    rate = n_sel / n_elig
    assert abs(rate - 0.15) < 5 * (0.15 * 0.85 / n_elig) ** 0.5
    masked = (inp == 4) & sel
    kept = (inp == ids) & sel
    rand = sel & ~masked & ~kept
    for frac, want in ((masked, 0.8), (rand, 0.1 * (1 - 1 / (V - 5))), (kept, 0.1 + 0.1 / (V - 5))):
        p = int(frac.sum()) / n_sel
        assert abs(p - want) < 5 * (want * (1 - want) / n_sel) ** 0.5, (p, want)
    assert (inp[rand] >= 5).all()  # random replacements are never special ids
    assert (inp[rand] < V).all()
    # random replacements are spread over the vocabulary, not a few ids
    assert len(set(inp[rand].tolist())) > 0.5 * min(int(rand.sum()), V - 5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=20), min_size=1, max_size=6), st.integers(0, 99),
       st.floats(0.0, 1.0))
def test_mask_tokens_properties(rows, seed, p):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    inp, labels = mask_tokens(ids, mask_id=4, special_ids=SPECIALS, vocab_size=31, attention_mask=attn,
                              mlm_probability=p, generator=torch.Generator().manual_seed(seed))
    sel = labels != IGNORE_INDEX
    assert inp.shape == ids.shape and labels.shape == ids.shape
    assert not (sel & ((ids < 5) | (attn == 0))).any()
    assert torch.equal(labels[sel], ids[sel])
    assert torch.equal(inp[~sel], ids[~sel])
    assert ((inp[sel] == 4) | (inp[sel] >= 5)).all()
    if p == 1.0:
        assert torch.equal(sel, (ids >= 5) & attn.bool())
    if p == 0.0:
        assert not sel.any()


def test_mask_tokens_same_seed_same_result():
    ids = torch.randint(5, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    a = mask_tokens(ids, mask_id=4, special_ids=SPECIALS, vocab_size=50, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, mask_id=4, special_ids=SPECIALS, vocab_size=50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pack_blocks_frames_the_stream():
    docs = [[10, 11, 12], [13], [14, 15, 16, 17, 18]]
    blocks = pack_blocks(docs, block_size=5, cls_id=2, sep_id=3)
    stream = [10, 11, 12, 3, 13, 3, 14, 15, 16, 17, 18, 3]
    assert blocks.shape == (4, 5)
    assert (blocks[:, 0] == 2).all() and (blocks[:, -1] == 3).all()
    assert blocks[:, 1:-1].reshape(-1).tolist() == stream


# -- a tiny pre-training run -----------------------------------------------------------------------


class _ToyTok:
    """A word-level stand-in with the attributes fill_mask uses."""

    mask_token = "[MASK]"

    def __init__(self, words):
        self.id_to_token = {i: w for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
        self.vocab = {w: i for i, w in self.id_to_token.items()}

    def token_to_id(self, t):
        return self.vocab[t]

    def encode(self, text):
        return [2, *(self.vocab[w] for w in text.split()), 3]


def test_pretraining_learns_context_and_fill_mask_uses_it():
    # Each block repeats one of 8 words: a masked word is given by its context (the loss can go to ~0) but
    # not by its frequency (the best context-free loss is ln 8 ≈ 2.08).
    torch.manual_seed(0)
    tok = _ToyTok([f"w{i}" for i in range(8)])
    g = torch.Generator().manual_seed(0)
    body = torch.randint(0, 8, (256, 1), generator=g).repeat(1, 14) + 5  # (256, 14)
    blocks = torch.cat([torch.full((256, 1), 2), body, torch.full((256, 1), 3)], dim=1)
    cfg = BertConfig(vocab_size=13, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=16, add_pooler=False)
    m = BertForMaskedLM(cfg)
    before = mlm_eval_loss(m, blocks[:64], mask_id=4, special_ids=SPECIALS)
    out = pretrain_mlm(m, blocks[64:], mask_id=4, special_ids=SPECIALS, steps=100, batch_size=32, lr=1e-2,
                       val_blocks=blocks[:64], eval_every=50)
    assert len(out["curve"]) == 100 and [s for s, _ in out["val"]] == [50, 100]
    after = out["val"][-1][1]
    assert before > 2.0 and after < 0.7, (before, after)  # far below the context-free loss ln 8
    top = fill_mask(m, tok, "w3 w3 [MASK] w3 w3")
    assert top[0][0][0] == "w3" and top[0][0][1] > 0.5


# -- fine-tuning and metrics -----------------------------------------------------------------------


def test_finetune_learns_a_separable_task():
    # label = whether the text holds token 10 or token 11 somewhere (position varies)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    rows, ys = [], []
    for i in range(96):
        n = int(torch.randint(4, 10, (1,), generator=g))
        r = torch.randint(12, 40, (n,), generator=g).tolist()
        r[int(torch.randint(0, n, (1,), generator=g))] = 10 + i % 2
        rows.append([2, *r, 3])
        ys.append(i % 2)
    clf = BertForSequenceClassification(BertConfig(**TINY), num_labels=2, pooling="mean", classifier_dropout=0.0)
    out = finetune_classifier(clf, rows[:64], ys[:64], pad_id=0, epochs=15, batch_size=16, lr=3e-3)
    assert out["steps"] == 60
    pred = predict(clf, rows[64:], pad_id=0)
    assert accuracy(ys[64:], pred) >= 0.9
    # batched prediction == one at a time (padding must not change the answer)
    assert pred == [predict(clf, [r], pad_id=0)[0] for r in rows[64:]]


def test_from_encoder_keeps_the_pretrained_encoder_weights():
    enc = BertModel(BertConfig(**TINY))
    w = enc.tok_emb.weight.detach().clone()
    clf = BertForSequenceClassification.from_encoder(enc, num_labels=4)
    assert clf.bert is enc and torch.equal(clf.bert.tok_emb.weight, w) and enc.pooler is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=60))
def test_macro_f1_and_accuracy_match_sklearn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    y, p = [a for a, _ in pairs], [b for _, b in pairs]
    assert macro_f1(y, p) == pytest.approx(metrics.f1_score(y, p, average="macro"), abs=1e-12)
    assert accuracy(y, p) == pytest.approx(metrics.accuracy_score(y, p), abs=1e-12)
