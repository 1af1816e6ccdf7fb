"""GPT with T5 relative position bias (pos_encoding "t5", R4.3): bias values, KV cache, save/load."""

from __future__ import annotations

import torch

from dodai.models.gpt import GPT, GPTConfig
from dodai.nn.relative_bias import relative_position_bucket_reference


def _tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=17, block_size=40, n_layer=2, n_head=4, n_embd=32, pos_encoding="t5",
                         rel_buckets=8, rel_max_distance=16, **kw)).eval()


def test_t5_bias_is_the_bucket_table_for_every_query_key_pair():
    model = _tiny()
    w = model.rel_bias.relative_attention_bias.weight  # (buckets, H)
    t = 25
    bias = model.rel_bias(t, t)[0]  # (H, T, S)
    for i in range(t):
        for j in range(t):
            b = relative_position_bucket_reference(j - i, bidirectional=False, num_buckets=8, max_distance=16)
            assert torch.equal(bias[:, i, j], w[b])
    # causal buckets: every key at or after the query (j >= i) shares bucket 0
    assert torch.equal(bias[:, 3, 3], bias[:, 3, 20])


def test_t5_cached_decoding_equals_full_forward():
    model = _tiny()
    idx = torch.randint(17, (2, 30), generator=torch.Generator().manual_seed(1))
    full, _ = model(idx)
    cache = model.new_cache(2, 30)
    parts = [model(idx[:, :11], cache=cache)[0]]
    parts += [model(idx[:, p:p + 1], cache=cache)[0] for p in range(11, 30)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def test_t5_reference_attention_equals_sdpa_and_gradients_reach_the_table():
    a, b = _tiny(), _tiny(attn_impl="reference")
    idx = torch.randint(17, (2, 33), generator=torch.Generator().manual_seed(2))
    la, lb = a(idx, idx)[1], b(idx, idx)[1]
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    la.backward()
    g = a.rel_bias.relative_attention_bias.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_t5_save_load_round_trip(tmp_path):
    model = _tiny()
    model.save(tmp_path)
    back = GPT.load(tmp_path).eval()
    idx = torch.randint(17, (1, 20), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(back(idx)[0], model(idx)[0])
    assert back.config.rel_buckets == 8 and back.config.rel_max_distance == 16
