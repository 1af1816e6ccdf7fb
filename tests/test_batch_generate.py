"""Left-padded batches: model logits == one row at a time; generate_batch == one prompt at a time
(greedy and seeded sampling with every knob), == HF ``generate`` on a left-padded batch, and on SmolLM2."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.batch import generate_batch
from dodai.generate.engine import complete
from dodai.generate.processors import LogitsPipeline
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.llama import Llama, LlamaConfig
from dodai.nn.padding import left_pad

PROMPTS = [[1, 5, 2, 7, 3, 9], [4, 8], [11, 2, 6], [13]]
KNOBS = dict(temperature=0.9, top_k=10, top_p=0.9, min_p=0.02, repetition_penalty=1.3, presence_penalty=0.2,
             frequency_penalty=0.1, no_repeat_ngram_size=2, logit_bias={3: 1.0})


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=26, block_size=40, n_layer=2, n_head=4, n_kv_head=2, n_embd=16)
    m = GPT(GPTConfig(**{**cfg, **kw}))
    with torch.no_grad():
        m.transformer.wte.weight.mul_(40)  # sharper distributions: choices depend on the context
    return m.eval()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=26, block_size=64, n_layer=2, n_embd=16, n_head=4, n_kv_head=2,
                          ffn_hidden=32))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(20)
    return m.eval()


class Letters:
    """A toy tokenizer: id i is the letter chr(97 + i)."""

    def decode(self, ids):
        return "".join(chr(97 + i) for i in ids)


def _rows_vs_batch(m, cached: bool, full_mask: bool = False):
    """Padded batch (prefill + 3 decode steps) vs each prompt alone, compared on the real positions."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    assert mask.sum(1).tolist() == [len(p) for p in PROMPTS]
    with torch.no_grad():
        if not cached:
            got, _ = m(ids, attention_mask=mask)
            for b, p in enumerate(PROMPTS):
                one, _ = m(torch.tensor([p]))
                torch.testing.assert_close(got[b, -len(p):], one[0], rtol=1e-5, atol=1e-5)
            return
        cache = m.new_cache(len(PROMPTS), ids.shape[1] + 3)
        m(ids, cache=cache, attention_mask=mask)
        extra = [[3, 1, 4], [1, 5, 9], [2, 6, 5], [3, 5, 8]]
        for s in range(3):
            x = torch.tensor([[e[s]] for e in extra])
            if full_mask:  # HF's convention: the mask of every token so far
                mask = torch.cat([mask, torch.ones(len(PROMPTS), 1, dtype=torch.bool)], dim=1)
                got, _ = m(x, cache=cache, attention_mask=mask)
            else:  # the cache keeps the mask: nothing to pass
                got, _ = m(x, cache=cache)
        for b, p in enumerate(PROMPTS):
            one, _ = m(torch.tensor([p + extra[b]]))
            torch.testing.assert_close(got[b, -1], one[0, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi", "t5", "none"])
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_gpt_padded_batch_equals_rows(pos, impl):
    m = tiny_gpt(pos_encoding=pos, attn_impl=impl)
    _rows_vs_batch(m, cached=False)
    _rows_vs_batch(m, cached=True)


def test_gpt_full_width_mask_and_post_ln():
    _rows_vs_batch(tiny_gpt(block_order="post"), cached=True, full_mask=True)


@pytest.mark.parametrize("eager", [False, True])
def test_llama_padded_batch_equals_rows(eager):
    m = tiny_llama().set_eager(eager)
    _rows_vs_batch(m, cached=False)
    _rows_vs_batch(m, cached=True)
    _rows_vs_batch(m, cached=True, full_mask=True)


def test_padding_is_invisible_whatever_the_pad_token():
    m = tiny_llama(1)
    ids, mask = left_pad(PROMPTS, pad_id=0)
    ids2 = ids.masked_fill(~mask, 17)
    with torch.no_grad():
        a, _ = m(ids, attention_mask=mask)
        b, _ = m(ids2, attention_mask=mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=0)
    assert torch.isfinite(a).all()  # padded query rows too (no NaN from all-masked rows)


@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama])
def test_greedy_batch_equals_one_by_one(make):
    m = make()
    pipe = LogitsPipeline(temperature=0.0)
    got = generate_batch(m, PROMPTS, 12, pipe)
    for g, p in zip(got, PROMPTS):
        assert g.ids == complete(m, p, 12, pipe)[0].ids
        assert g.finish_reason == "length"


@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama])
def test_sampled_batch_with_every_knob_equals_one_by_one(make):
    m = make(3)
    pipe = LogitsPipeline(**KNOBS)
    seeds = [5, 6, 7, 8]
    got = generate_batch(m, PROMPTS, 14, pipe, seed=seeds, stop_tokens=[4], logprobs=2)
    reasons = set()
    for g, p, s in zip(got, PROMPTS, seeds):
        ref = complete(m, p, 14, pipe, seed=s, stop_tokens=[4], logprobs=2)[0]
        assert g.ids == ref.ids and g.finish_reason == ref.finish_reason
        for x, y in zip(g.logprobs, ref.logprobs):
            assert x.token == y.token and x.logprob == pytest.approx(y.logprob, abs=1e-4)
            assert [t for t, _ in x.top] == [t for t, _ in y.top]
        reasons.add(g.finish_reason)
    # one int seed means seed + row; batch_size splits the batch without changing any row
    again = generate_batch(m, PROMPTS, 14, pipe, seed=5, stop_tokens=[4], logprobs=2, batch_size=3)
    assert [c.ids for c in again] == [c.ids for c in got]


def test_rows_finish_separately_and_leave_the_batch():
    m = tiny_gpt(4)
    pipe = LogitsPipeline(temperature=1.0)
    free = generate_batch(m, PROMPTS * 2, 20, pipe, seed=0)
    # an EOS id that some rows produce and others never do
    eos = next(t for t in free[0].ids[2:] if any(t not in c.ids for c in free))
    widths = []
    hook = m.register_forward_pre_hook(lambda mod, args: widths.append(args[0].shape[0]))
    try:
        got = generate_batch(m, PROMPTS * 2, 20, pipe, seed=0, eos_id=eos)
    finally:
        hook.remove()
    for c, f in zip(got, free):
        if eos in f.ids:  # the row is cut at its first EOS, everything before it unchanged
            assert c.finish_reason == "eos" and c.ids == f.ids[:f.ids.index(eos) + 1]
        else:
            assert c.finish_reason == "length" and c.ids == f.ids
    n_long = sum(eos not in f.ids for f in free)
    assert widths[0] == 8 and widths[-1] == n_long < 8  # finished rows stopped computing
    assert widths == sorted(widths, reverse=True)


def test_stop_strings_per_row():
    m = tiny_gpt(5)
    pipe = LogitsPipeline(temperature=1.2)
    ref = [complete(m, p, 16, pipe, seed=10 + r, stop_strings=["ab", "k"], tokenizer=Letters())[0]
           for r, p in enumerate(PROMPTS)]
    got = generate_batch(m, PROMPTS, 16, pipe, seed=10, stop_strings=["ab", "k"], tokenizer=Letters())
    assert [(c.ids, c.text, c.finish_reason) for c in got] == [(c.ids, c.text, c.finish_reason) for c in ref]
    assert all("ab" not in c.text and "k" not in c.text for c in got)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.lists(st.integers(0, 25), min_size=1, max_size=9), min_size=1, max_size=5))
def test_property_any_lengths(prompts):
    m = tiny_gpt(6)
    pipe = LogitsPipeline(temperature=0.0)
    got = generate_batch(m, prompts, 5, pipe)
    assert [c.ids for c in got] == [complete(m, p, 5, pipe)[0].ids for p in prompts]


def test_hostile_inputs():
    m = tiny_gpt()
    pipe = LogitsPipeline(temperature=0.0)
    with pytest.raises(DodaiError, match="no prompts"):
        generate_batch(m, [], 4, pipe)
    with pytest.raises(DodaiError, match="empty"):
        generate_batch(m, [[1], []], 4, pipe)
    with pytest.raises(DodaiError, match="context window"):
        generate_batch(m, [[1], [1] * 30], 11, pipe)
    with pytest.raises(DodaiError, match="seeds"):
        generate_batch(m, [[1], [2]], 4, pipe, seed=[1])
    with pytest.raises(DodaiError, match="batch size"):
        generate_batch(m, [[1]], 4, pipe, batch_size=0)
    with pytest.raises(DodaiError, match="pad id"):
        generate_batch(m, [[1]], 4, pipe, pad_id=99)
    with pytest.raises(DodaiError, match="attention_mask"):
        m(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 5))
    with pytest.raises(DodaiError, match="no real token"):
        m(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(DodaiError, match="position ids"):
        m(torch.ones(1, 3, dtype=torch.long), position_ids=torch.tensor([[0, 1, 99]]))
    assert generate_batch(m, [[1], [2, 3]], 0, pipe)[1].ids == []


def test_mistral_padded_batch_equals_one_by_one():
    """Sliding windows count positions, so left padding does not shift them (prompts longer than W)."""
    from dodai.models.mistral import Mistral, MistralConfig

    torch.manual_seed(0)
    m = Mistral(MistralConfig(vocab_size=26, block_size=32, n_layer=2, n_embd=16, n_head=2, n_kv_head=1,
                              ffn_hidden=16, sliding_window=4)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(20)  # sharper distributions, so a wrong window changes the greedy tokens
    prompts = [[1, 2, 3, 4, 5, 6, 7], [3], [8, 9, 10, 11, 12]]
    pipe = LogitsPipeline(temperature=0.0)
    batched = [c.ids for c in generate_batch(m, prompts, 8, pipe, pad_id=0)]
    alone = [generate_batch(m, [p], 8, pipe)[0].ids for p in prompts]
    assert batched == alone and len(batched[0]) == 8


def test_hf_generate_left_padded_batch_parity():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.3,
                                   pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = Llama.from_hf_state_dict(LlamaConfig.from_hf_config(cfg.to_dict()), hf.state_dict())
    prompts = [[5, 9, 14, 3, 22, 7, 31], [8, 40], [17, 11, 29, 6], [44]]
    ids, mask = left_pad(prompts, pad_id=0)
    n = 12
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    theirs = out[:, ids.shape[1]:].tolist()
    got = generate_batch(ours, prompts, n, LogitsPipeline(temperature=0.0), pad_id=0)
    assert [c.ids for c in got] == theirs
    assert len({tuple(t) for t in theirs}) == len(prompts)  # the rows really differ


@pytest.mark.models
def test_smollm2_batched_greedy_equals_one_by_one(smollm2_gguf):
    from dodai.generate.sampling import generate
    from dodai.models import load_model

    model, tok = load_model(str(smollm2_gguf))
    texts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village by the sea,"]
    prompts = [tok.encode(t) for t in texts]
    assert len({len(p) for p in prompts}) == 3  # really different lengths: padding is exercised
    got = generate_batch(model, prompts, 16, LogitsPipeline(temperature=0.0), eos_id=tok.eos_id, batch_size=3)
    for c, p in zip(got, prompts):
        assert c.ids == list(generate(model, p, 16, temperature=0.0, eos_id=tok.eos_id))


def test_cli_several_prompts_as_a_batch(tmp_path, capsys):
    from dodai.cli import main
    from dodai.tokenizers.char import CharTokenizer

    tok = CharTokenizer.train("hello world, this is a tiny test of the generator.\n")
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16, tie_weights=False))
    with torch.no_grad():
        m.lm_head.weight.mul_(12)
    m.save(tmp_path)
    tok.save(tmp_path)
    (tmp_path / "prompts.txt").write_text("this is\n\nthe gen\n", encoding="utf-8")
    texts = ["hello", "a tiny test of", "this is", "the gen"]
    base = ["generate", "--model", str(tmp_path), "--max-new-tokens", "12", "--temperature", "0"]
    singles = []
    for t in texts:
        assert main(base + ["--prompt", t]) == 0
        singles.append(capsys.readouterr().out)
    argv = base + ["--prompt", texts[0], "--prompt", texts[1], "--prompts-file", str(tmp_path / "prompts.txt"),
                   "--batch-size", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    blocks = out.split("--- prompt ")[1:]
    assert len(blocks) == 4
    for i, (blk, single) in enumerate(zip(blocks, singles)):
        head, body = blk.split("\n", 1)
        assert head.startswith(f"{i + 1} (")
        assert body == single  # batched greedy == the one-prompt command
    assert main(base + ["--prompt", "a", "--prompt", "b", "--batch-size", "0"]) == 2
    assert main(["generate", "--model", str(tmp_path)]) == 2  # no prompt at all


def test_bench_generate_batch_rows(tmp_path, capsys):
    import json

    from dodai.cli import main
    from dodai.tokenizers.char import CharTokenizer

    tok = CharTokenizer.train("hello world, this is a tiny benchmark text.\n")
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).save(tmp_path)
    tok.save(tmp_path)
    argv = ["bench", "generate", "--model", str(tmp_path), "--prompt-tokens", "4", "--new-tokens", "4",
            "--no-cache-tokens", "4", "--repeats", "1", "--threads", "1", "--batch", "3"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_prompts"] == 3 and out["batched_tok_s"] > 0 and out["single_stream_tok_s"] > 0
    assert out["batched_speedup"] == pytest.approx(out["batched_tok_s"] / out["single_stream_tok_s"])
    assert main(argv) == 0
    assert "3 prompts x 4 tokens as one batch" in capsys.readouterr().out
