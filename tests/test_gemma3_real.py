"""Real Gemma 3 270M (GGUF Q4_K_M): dodai vs HF transformers loading the same file.

HF builds ``Gemma3ForCausalLM`` and its ``GemmaTokenizer`` from the GGUF itself (``from_pretrained(dir,
gguf_file=…)``: the ``gguf`` package's dequantizer, HF's own vocabulary conversion); dodai uses its own reader,
dequantizer, decoder and tokenizer. HF's objects are built once and kept by HF's ``save_pretrained`` (see
tests/_gemma3_refs.py); dodai's model is loaded once per test process.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.models

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")  # HF's GGUF loading needs it (and accelerate)

TEXTS = [
    "Hello, world! It's a test; we'll see what they've done.",
    "日本語の文章を正しく分割できるかどうか、確かめます。カタカナも漢字も。",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "emoji 🙂👍🏽🇯🇵 and 🧑‍🧑‍🧒 families",
    "spaces:    four, tabs:\t\t, newlines:\n\n\n, trailing   ",
    "numbers 1234567 3.14159 2024-11-27 1e-5 $1,000",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "   leading spaces and a > </b> tag",
    "control \x04\x06 and \x7f bytes, ｆｕｌｌ　ｗｉｄｔｈ",
]

PROMPTS = {  # greedy continuations: English, code, Japanese
    "en": "The capital of France is Paris. The capital of Japan is",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "ja": "日本の首都は東京です。富士山は",
}


@pytest.fixture(scope="module")
def dodai_gemma(gemma3_gguf):
    from _gemma3_refs import dodai_gemma3

    return dodai_gemma3(str(gemma3_gguf))


@pytest.fixture(scope="module")
def hf_tok(gemma3_gguf):
    from _gemma3_refs import hf_tokenizer

    return hf_tokenizer(str(gemma3_gguf))


@pytest.fixture(scope="module")
def hf_model(gemma3_gguf):
    pytest.importorskip("accelerate")
    from _gemma3_refs import hf_model

    return hf_model(str(gemma3_gguf))


def _long_ids(tok, n: int) -> list[int]:
    from dodai.quant.perplexity import heldout_ids

    return heldout_ids(tok, n)  # BOS + held-out prose


def test_config_and_tokenizer_metadata(dodai_gemma):
    model, tok = dodai_gemma
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim, c.ffn_hidden, c.vocab_size) == \
        (18, 640, 4, 1, 256, 2048, 262144)
    assert c.sliding_window == 512 and c.layer_types.count("global") == 3
    assert [i for i, t in enumerate(c.layer_types) if t == "global"] == [5, 11, 17]
    assert (c.rope_theta, c.rope_theta_local, c.attn_scale) == (1e6, 1e4, 256.0)
    assert model.output.weight is model.tok_embeddings.weight
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos, tok.add_eos) == (2, 1, 0, True, False)
    assert tok.special_tokens["<end_of_turn>"] == 106 and not tok.chat_template_from_file


def test_tokenizer_ids_match_hf(dodai_gemma, hf_tok):
    _, tok = dodai_gemma
    for text in TEXTS:
        ours = tok.encode(text)
        assert ours == hf_tok.encode(text, add_special_tokens=False), text
        assert [tok.bos_id] + ours == hf_tok.encode(text), text  # HF's default adds <bos>, as add_bos says
        assert tok.decode(ours) == hf_tok.decode(ours), text
        assert tok.decode(ours) == text or "\u2581" in text
    assert tok.decode([2, 105]) == hf_tok.decode([2, 105]) == "<bos><start_of_turn>"
    assert tok.decode([2, 105], skip_special_tokens=True) == ""


def test_tokenizer_property_random_text(dodai_gemma, hf_tok):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    _, tok = dodai_gemma
    alphabet = st.sampled_from(list("abcXYZ 019\n\t'.,!?-_()<>/") + ["日", "本", "語", "カ", "é", "ß", "🙂", "👍🏽",
                                                                     "<end_of_turn>", "<bos>", "  ", "\u00a0",
                                                                     "\x04", "▁", "the", " the", "ing"])

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(alphabet, max_size=40).map("".join))
    def check(text):
        assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)

    check()


def test_logits_match_hf_short_and_past_the_window(dodai_gemma, hf_model, hf_tok):
    model, tok = dodai_gemma
    cases = [hf_tok.encode(p) for p in PROMPTS.values()] + [_long_ids(tok, 600)]
    assert len(cases[-1]) == 600 > model.config.sliding_window  # local layers really drop keys
    for ids in cases:
        x = torch.tensor([ids])
        with torch.no_grad():
            ours, _ = model(x)
            ref = hf_model(x).logits
        delta = (ours - ref).abs().max().item()
        assert delta <= 1e-3, (len(ids), delta)
        assert torch.equal(ours[0].argmax(-1), ref[0].argmax(-1))


def test_window_matters_on_the_long_prompt(dodai_gemma):
    """The same weights with every layer global give different logits past W: the local layers are real."""
    model, tok = dodai_gemma
    x = torch.tensor([_long_ids(tok, 600)])
    attns = [blk.attn for blk in model.layers]
    windows = [a.window for a in attns]
    with torch.no_grad():
        a, _ = model(x)
        try:  # the shared model, briefly dense (every layer global; RoPE bases unchanged)
            for att in attns:
                att.window = 0
            b, _ = model(x)
        finally:
            for att, w in zip(attns, windows):
                att.window = w
    assert (a[0, :512] - b[0, :512]).abs().max() < 1e-3  # equal while every key is inside the window
    assert (a[0, 520:] - b[0, 520:]).abs().max() > 0.1


@pytest.mark.parametrize("name", list(PROMPTS))
def test_greedy_32_tokens_identical_to_hf(dodai_gemma, hf_model, hf_tok, name):
    from dodai.generate.sampling import generate

    model, tok = dodai_gemma
    ids = hf_tok.encode(PROMPTS[name])
    assert ids == [tok.bos_id] + tok.encode(PROMPTS[name])
    ours = list(generate(model, ids, 32, temperature=0.0, eos_id=tok.eos_id))
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False, eos_token_id=tok.eos_id,
                                pad_token_id=0)
    ref = out[0, len(ids):].tolist()
    assert ours == ref, (tok.decode(ours), tok.decode(ref))
    assert len(ours) == 32  # a real continuation, no early stop


def test_cached_equals_uncached_past_the_window(dodai_gemma):
    """Prefill 540 tokens, then decode 24 one at a time, through the rolling cache (W slots on local layers) and
    a plain full cache: both equal the uncached forward at positions 539..563."""
    from dodai.nn.kv_cache import KVCache
    from dodai.nn.rolling_cache import RollingKVCache

    model, tok = dodai_gemma
    c = model.config
    x = torch.tensor([_long_ids(tok, 564)])
    with torch.no_grad():
        full, _ = model(x)
        for cache in (model.new_cache(1, 564), KVCache(c.n_layer, 1, c.n_kv_head, 564, c.head_dim)):
            parts = [model(x[:, :540], cache=cache, last_only=True)[0]]  # logits of position 539
            parts += [model(x[:, t:t + 1], cache=cache)[0] for t in range(540, 564)]
            torch.testing.assert_close(torch.cat(parts, 1), full[:, 539:], atol=2e-4, rtol=1e-4)
    rolling = model.new_cache(1, 564)
    assert isinstance(rolling, RollingKVCache)
    assert rolling.k[0].shape[2] == 512 and rolling.k[5].shape[2] == 564  # local: W slots; global: the context


def test_left_padded_batch_equals_one_by_one(dodai_gemma, hf_tok):
    from dodai.generate.batch import generate_batch
    from dodai.generate.processors import LogitsPipeline

    model, _ = dodai_gemma
    prompts = [hf_tok.encode(p) for p in PROMPTS.values()]
    assert len({len(p) for p in prompts}) == 3
    pipe = LogitsPipeline(temperature=0.0)
    batched = [c.ids for c in generate_batch(model, prompts, 8, pipe, pad_id=0)]
    alone = [generate_batch(model, [p], 8, pipe)[0].ids for p in prompts]
    assert batched == alone and all(len(b) == 8 for b in batched)


def test_chat_template_render_identical_to_hf(dodai_gemma, hf_tok):
    """The file has no chat template: dodai supplies Gemma's turn format, rendered by dodai's sandboxed renderer
    and by HF's (jinja2) to the same text and the same ids."""
    from dodai.chat_template import ChatTemplate

    _, tok = dodai_gemma
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi "},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "日本の首都は？"}],
    ]
    tmpl = ChatTemplate(tok.chat_template, {"bos_token": "<bos>", "eos_token": "<eos>"})
    for conv in convs:
        for gen in (True, False):
            ours = tmpl.render(conv, add_generation_prompt=gen)
            ref = hf_tok.apply_chat_template(conv, chat_template=tok.chat_template, tokenize=False,
                                             add_generation_prompt=gen)
            assert ours == ref
            assert tok.encode(ours) == hf_tok.encode(ref, add_special_tokens=False)
    assert ours.startswith("<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n")
