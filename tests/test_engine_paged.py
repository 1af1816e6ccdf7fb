"""Continuous batching (dodai.generate.paged): ragged steps, admission between steps, chunked prefill, prefix
sharing, cancellation — every request's output equals what it gets alone, and every block comes back."""

import pytest
import torch

from dodai.errors import DodaiError
from dodai.generate.engine import Engine, Request, run_requests
from dodai.generate.paged import PagedBackend, PrefixBlockPool, block_name
from dodai.generate.processors import LogitsPipeline
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.llama import Llama, LlamaConfig

GREEDY = LogitsPipeline(temperature=0.0)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=97, block_size=160, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                          ffn_hidden=64)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8)  # peaked distributions: a wrong key or position changes the greedy tokens
    return m


def tiny_gpt(seed=0, pos="rope"):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=97, block_size=160, n_layer=2, n_head=4, n_embd=32, pos_encoding=pos)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8)
    return m


def prompts(seed=1):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (5, 17, 3, 40, 16, 33, 1, 64)]
    ps.append(ps[3][:32] + [1, 2, 3])  # shares two full blocks (of 16) with prompt 3
    return ps


def drive(engine, reqs, add_every=0):
    """Add the requests (optionally one every ``add_every`` steps, so they join a running batch); step to the
    end. Returns the number of steps."""
    pending = list(reqs)
    steps = 0
    while pending or not engine.idle:
        if pending and (add_every == 0 or steps % add_every == 0):
            for r in (pending if add_every == 0 else pending[:1]):
                engine.add(r)
            pending = [] if add_every == 0 else pending[1:]
        engine.step()
        steps += 1
    return steps


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt, lambda: tiny_gpt(pos="learned")])
@pytest.mark.parametrize("add_every", [0, 3])
def test_continuous_batching_equals_each_request_alone(make, add_every):
    m = make()
    ps = prompts()
    alone = [run_requests(m, [Request(p, 12, GREEDY)])[0].ids for p in ps]
    be = PagedBackend(m, num_blocks=40, block_size=16, max_batch=3, prefill_chunk=10)
    reqs = [Request(p, 12, GREEDY) for p in ps]
    drive(Engine(m, be), reqs, add_every)
    assert [r.ids for r in reqs] == alone
    assert be.blocks_free == be.blocks_total and be.reserved == 0  # every block came back
    assert reqs[-1].prompt_cached == 32 or add_every  # the shared prefix was reused when prompt 3 came first


def test_sampling_with_seeds_equals_alone_and_knobs_per_request():
    m = tiny_llama()
    ps = prompts()[:6]
    pipes = [LogitsPipeline(temperature=0.9, top_k=20), LogitsPipeline(temperature=1.2, top_p=0.8),
             LogitsPipeline(temperature=0.0, repetition_penalty=1.3), LogitsPipeline(temperature=0.7, min_p=0.1),
             LogitsPipeline(temperature=1.0, presence_penalty=0.5), GREEDY]
    mk = lambda: [Request(p, 10, pipe, seed=100 + i, logprobs=2) for i, (p, pipe) in enumerate(zip(ps, pipes))]  # noqa
    alone = [run_requests(m, [r])[0] for r in mk()]
    reqs = mk()
    drive(Engine(m, PagedBackend(m, num_blocks=30, block_size=8, max_batch=6, prefill_chunk=16)), reqs)
    for r, a in zip(reqs, alone):
        assert r.ids == a.ids
        assert [x.token for x in r.logprobs] == r.ids
        for x, y in zip(r.logprobs, a.logprobs):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_long_prompt_is_prefilled_in_chunks_without_stalling_decoding():
    m = tiny_llama()
    be = PagedBackend(m, num_blocks=30, block_size=16, max_batch=4, prefill_chunk=16)
    eng = Engine(m, be)
    short = eng.add(Request([5, 6, 7], 40, GREEDY))
    eng.step()
    eng.step()
    long_ = eng.add(Request(list(range(1, 97)) + list(range(1, 33)), 8, GREEDY))  # 128 tokens = 8 chunks
    counts = []
    while long_.t_admitted is None or long_.ids == []:
        n = len(short.ids)
        eng.step()
        counts.append(len(short.ids) - n)
    assert len(counts) >= 8  # the long prompt took several steps to prefill ...
    assert all(c == 1 for c in counts)  # ... and the running request got a token at every one of them
    while not eng.idle:
        eng.step()
    assert long_.ids == run_requests(m, [Request(long_.prompt, 8, GREEDY)])[0].ids


def test_prefix_blocks_are_shared_named_reused_and_evicted_last():
    m = tiny_llama()
    be = PagedBackend(m, num_blocks=12, block_size=8, max_batch=4)
    sys_prompt = list(range(10, 42))  # 32 tokens = 4 full blocks
    a = Request(sys_prompt + [1, 2, 3], 4, GREEDY)
    drive(Engine(m, be), [a])
    assert be.blocks_free == 12 and be.pool.num_cached >= 4  # free, but the named prefix is kept
    b = Request(sys_prompt + [4, 5], 4, GREEDY)
    drive(Engine(m, be), [b])
    assert b.prompt_cached == 32
    assert b.ids == run_requests(m, [Request(b.prompt, 4, GREEDY)])[0].ids
    # a conversation's next turn reuses the earlier turn's generated tokens too (named as they filled)
    turn2 = a.prompt + a.ids + [7] * 10
    c = Request(turn2, 3, GREEDY)
    drive(Engine(m, be), [c])
    assert c.prompt_cached == (len(a.prompt) + len(a.ids) - 1) // 8 * 8
    # requests that need the whole pool evict the named blocks (least recently freed first)
    d = Request(list(range(50, 90)), 50, GREEDY)  # 90 positions = 12 blocks of 8
    drive(Engine(m, be), [d])
    assert len(d.ids) == 50 and be.blocks_free == 12


def test_block_names_chain_the_whole_prefix():
    n1 = block_name(b"", [1, 2, 3, 4])
    assert block_name(b"", [1, 2, 3, 4]) == n1 and block_name(b"", [1, 2, 3, 5]) != n1
    assert block_name(n1, [9, 9, 9, 9]) != block_name(block_name(b"", [0, 2, 3, 4]), [9, 9, 9, 9])


def test_admission_waits_for_blocks_and_rows():
    m = tiny_llama()
    be = PagedBackend(m, num_blocks=6, block_size=8, max_batch=2)
    eng = Engine(m, be)
    reqs = [eng.add(Request([1 + i, 2, 3], 20, GREEDY)) for i in range(4)]  # each needs 3 blocks
    eng.step()
    assert len(eng.running) == 2 and len(eng.waiting) == 2  # two fit (6 blocks), the others wait
    while not eng.idle:
        eng.step()
        assert be.pool.num_free >= 0 and len(eng.running) <= 2
    assert all(len(r.ids) == 20 for r in reqs) and be.blocks_free == 6
    with pytest.raises(DodaiError, match="KV blocks"):
        eng.add(Request([1], 60, GREEDY))
        eng.step()


def test_cancel_frees_blocks_at_the_next_step_whatever_the_state():
    m = tiny_llama()
    be = PagedBackend(m, num_blocks=40, block_size=8, max_batch=2, prefill_chunk=8)
    eng = Engine(m, be)
    running = eng.add(Request([1, 2, 3], 30, GREEDY))
    prefilling = eng.add(Request(list(range(1, 60)), 5, GREEDY))
    waiting = eng.add(Request([4, 5], 5, GREEDY))
    eng.step()
    eng.step()
    assert running.ids and prefilling in [s.req for s in be.prefilling] and waiting in eng.waiting
    for r in (running, prefilling, waiting):
        r.cancel()
    eng.step()
    assert all(r.finish_reason == "cancelled" for r in (running, prefilling, waiting))
    assert eng.idle and be.blocks_free == 40 and be.reserved == 0
    nxt = eng.add(Request([9, 9], 4, GREEDY))
    while not eng.idle:
        eng.step()
    assert len(nxt.ids) == 4


def test_a_failing_step_ends_its_requests_and_frees_everything():
    m = tiny_llama()
    be = PagedBackend(m, num_blocks=20, block_size=8, max_batch=4)
    eng = Engine(m, be)
    reqs = [eng.add(Request([1, 2, 3], 10, GREEDY)) for _ in range(3)]
    eng.step()
    real = m.forward
    m.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    try:
        with pytest.raises(RuntimeError):
            eng.step()
    finally:
        m.forward = real
    assert all(r.finish_reason == "error" for r in reqs) and be.blocks_free == 20 and be.reserved == 0


def test_pool_accounting():
    pool = PrefixBlockPool(1, 1, 4, num_blocks=3, block_size=2)
    a, b = pool.allocate(), pool.allocate()
    pool.name(a, b"x")
    pool.decref(a)
    assert pool.num_free == 2 and pool.num_cached == 1 and pool.lookup(b"x") == a
    pool.incref(a)  # reused from the named free list
    assert pool.num_free == 1 and pool.num_cached == 0
    pool.decref(a)
    pool.decref(b)
    c, d = pool.allocate(), pool.allocate()  # the clean blocks first, the named one last
    assert a not in (c, d)
    e = pool.allocate()
    assert e == a and pool.lookup(b"x") is None  # evicted: its name is gone
    with pytest.raises(DodaiError, match="exhausted"):
        pool.allocate()
    with pytest.raises(DodaiError, match="twice"):
        pool.decref(a)
        pool.decref(a)
