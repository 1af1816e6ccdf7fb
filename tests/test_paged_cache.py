"""The paged KV cache: == the contiguous cache, blocks allocated on demand, freed and reused, accounting."""

import pytest
import torch
from test_batch_generate import tiny_gpt as _tiny_gpt
from test_batch_generate import tiny_llama

from dodai.errors import DodaiError
from dodai.generate.batch import generate_batch
from dodai.generate.processors import LogitsPipeline
from dodai.nn.padding import left_pad
from dodai.nn.paged_cache import BlockPool, PagedKVCache

PROMPTS = [[1, 5, 2, 7, 3, 9], [4, 8], [11, 2, 6], [13]]


def tiny_gpt(seed=0):
    return _tiny_gpt(seed, pos_encoding="rope")


@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama])
def test_paged_equals_contiguous_logits(make):
    m = make()
    ids, mask = left_pad(PROMPTS)
    pool = BlockPool.for_model(m, num_blocks=32, block_size=4)  # 4 does not divide the prompt width 6
    dense, paged = m.new_cache(4, 16), PagedKVCache(pool, 4)
    with torch.no_grad():
        a, _ = m(ids, cache=dense, attention_mask=mask)
        b, _ = m(ids, cache=paged, attention_mask=mask)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        for s in range(7):  # crosses two block boundaries
            x = torch.tensor([[s + 1], [s + 2], [s + 3], [s + 4]])
            a, _ = m(x, cache=dense)
            b, _ = m(x, cache=paged)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert paged.pos == dense.pos == 13
    assert pool.num_used == 4 * 4  # ceil(13 / 4) blocks per row, allocated on demand
    for layer in range(2):  # the gathered K equals the contiguous buffer
        k, _ = paged.update(layer, torch.zeros(4, 2, 0, 4), torch.zeros(4, 2, 0, 4))
        torch.testing.assert_close(k, dense.k[layer][:, :, :13])


@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama])
def test_generate_batch_on_a_pool_equals_contiguous(make):
    m = make(1)
    pipe = LogitsPipeline(temperature=1.0, top_k=8)
    pool = BlockPool.for_model(m, num_blocks=40, block_size=3)
    a = generate_batch(m, PROMPTS, 10, pipe, seed=4, eos_id=5)
    b = generate_batch(m, PROMPTS, 10, pipe, seed=4, eos_id=5, pool=pool)
    assert [c.ids for c in a] == [c.ids for c in b]
    assert pool.num_free == 40  # every block back in the pool when the batch ends


def test_finished_rows_free_their_blocks_and_new_sequences_reuse_them():
    pool = BlockPool(n_layer=1, n_kv_head=1, head_dim=2, num_blocks=6, block_size=2)
    c = PagedKVCache(pool, batch=3)
    kv = torch.randn(3, 1, 3, 2)
    c.update(0, kv, kv)
    c.advance(3)  # 3 positions -> 2 blocks per row
    assert pool.num_used == 6 and pool.num_free == 0
    row1 = list(c.tables[1])
    with pytest.raises(DodaiError, match="exhausted"):
        PagedKVCache(pool, 1).update(0, kv[:1], kv[:1])
    c.keep_rows([0, 2])  # row 1 finished
    assert c.batch == 2 and pool.num_free == 2
    other = PagedKVCache(pool, 1)
    other.update(0, kv[:1], kv[:1])
    assert sorted(other.tables[0]) == sorted(row1)  # the finished row's blocks, reused
    k, _ = c.update(0, torch.zeros(2, 1, 0, 2), torch.zeros(2, 1, 0, 2))
    torch.testing.assert_close(k, kv[[0, 2]])  # the kept rows' data untouched by the reuse
    c.release()
    other.release()
    assert pool.num_free == 6 and pool.num_used == 0
    with pytest.raises(DodaiError, match="twice"):
        pool.free([0])


def test_pool_exhaustion_during_generation_is_a_clear_error():
    m = tiny_llama()
    pool = BlockPool.for_model(m, num_blocks=5, block_size=4)
    with pytest.raises(DodaiError, match="pool exhausted"):
        generate_batch(m, PROMPTS, 10, LogitsPipeline(temperature=0.0), pool=pool)
    assert pool.num_free == 5  # the failed batch gave its blocks back


def test_memory_accounting():
    m = tiny_llama()
    pool = BlockPool.for_model(m, num_blocks=10, block_size=4)
    per_tok_layer = 2 * 2 * 4 * 4  # K and V x 2 kv heads x head dim 4 x 4 bytes (fp32)
    assert pool.bytes_per_token_per_layer() == per_tok_layer
    assert pool.bytes_per_block() == 2 * 4 * per_tok_layer  # 2 layers x 4 positions
    assert pool.nbytes() == 10 * pool.bytes_per_block()
    assert pool.nbytes() == sum(t.numel() * t.element_size() for t in pool.k + pool.v)
    c = PagedKVCache(pool, 2)
    assert c.bytes_per_token() == m.new_cache(1, 1).bytes_per_token()
    with torch.no_grad():
        m(torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]), cache=c)
    assert c.nbytes() == pool.bytes_in_use() == 4 * pool.bytes_per_block()  # 2 rows x ceil(5 / 4) blocks


def test_bad_arguments():
    with pytest.raises(DodaiError, match="num_blocks"):
        BlockPool(1, 1, 2, num_blocks=0)
    with pytest.raises(DodaiError, match="batch"):
        PagedKVCache(BlockPool(1, 1, 2, 4), 0)
    c = PagedKVCache(BlockPool(1, 1, 2, 4), 2)
    with pytest.raises(DodaiError, match="rows"):
        c.update(0, torch.zeros(3, 1, 1, 2), torch.zeros(3, 1, 1, 2))
