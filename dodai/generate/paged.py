"""Continuous batching on a paged KV cache with prefix sharing: the backend behind ``dodai serve``.

Notation: N blocks in the pool, P positions per block, L layers, H_kv key/value heads, D head dim, B live rows
in a step, S the longest row's cached length, t new tokens per row.

PagedAttention (Kwon et al. 2023, vLLM) stores keys and values in fixed-size blocks from one pool, so a
sequence holds ceil(len / P) blocks instead of a whole context's worth. :class:`PagedBackend` adds the two
things a server needs on top of :mod:`dodai.nn.paged_cache`:

- **Ragged steps.** Rows of different lengths decode together: a step builds, per layer, the keys of every row
  *right-aligned* in a (B, H_kv, S + t, D) batch — row b's L_b cached positions fill the last columns before
  the new ones, the columns before them read a zero padding slot and are masked (``cache.key_mask``), exactly
  the left-padded layout the models already take (:mod:`dodai.nn.padding`), so RoPE positions come out as
  L_b, L_b + 1, … per row with no change to any model. The gather is one indexed copy per layer per step.
- **Admission between steps, chunked prefill.** A request joins whenever its blocks fit; its prompt is
  prefilled in chunks of at most ``prefill_chunk`` tokens per step, between decode steps, so a long prompt
  delays the running rows by one chunk at a time, not by the whole prompt. Blocks are *reserved* for
  prompt + max_new_tokens at admission, so a running request never finds the pool empty (no preemption
  needed); a request that cannot fit waits.
- **Prefix caching.** A full block is named by a hash of its tokens and of every token before it
  (BLAKE2b over the ids: a collision would hand one request another's keys, so no weak hash). A new request
  reuses the longest chain of named blocks that matches its prompt (a shared system prompt, the earlier turns
  of a conversation — including the generated replies, whose blocks are named as they fill), taking a
  reference instead of computing them. Blocks nobody references stay named and reusable until the pool needs
  them (least recently freed first), and count as free.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from dodai.errors import DodaiError


class PrefixBlockPool:
    """K/V storage for L layers in N blocks of P slots (plus one zero padding slot), with reference counts and
    named (hashed) blocks. Storage per layer is (N·P + 1, H_kv, D): slot ``b·P + i`` is position i of block b."""

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, num_blocks: int, block_size: int = 16,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, v in (("n_layer", n_layer), ("n_kv_head", n_kv_head), ("head_dim", head_dim),
                        ("num_blocks", num_blocks), ("block_size", block_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise DodaiError(f"KV pool: {name} must be a positive integer, got {v!r}")
        self.n_layer, self.n_kv_head, self.head_dim = n_layer, n_kv_head, head_dim
        self.num_blocks, self.block_size, self.dtype = num_blocks, block_size, dtype
        slots = num_blocks * block_size + 1
        self.pad_slot = slots - 1
        self.k = [torch.zeros(slots, n_kv_head, head_dim, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(slots, n_kv_head, head_dim, dtype=dtype, device=device) for _ in range(n_layer)]
        self.refs = [0] * num_blocks
        self._clean = list(range(num_blocks - 1, -1, -1))  # free and unnamed: a stack, lowest id first
        self._cached: OrderedDict[int, None] = OrderedDict()  # free but named, least recently freed first
        self.name_of: dict[int, bytes] = {}
        self.block_of: dict[bytes, int] = {}

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int = 16) -> PrefixBlockPool:
        """A pool shaped for ``model``'s layers and K/V heads (read off a one-position cache)."""
        c = model.new_cache(1, 1)
        return cls(c.n_layer, c.n_kv_head, c.head_dim, num_blocks, block_size, c.dtype, c.k[0].device)

    @property
    def num_free(self) -> int:
        """Blocks no sequence references (named ones included: they can be taken back at any time)."""
        return len(self._clean) + len(self._cached)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def bytes_per_block(self) -> int:
        return 2 * self.n_layer * self.block_size * self.n_kv_head * self.head_dim * torch.finfo(self.dtype).bits // 8

    def allocate(self) -> int:
        """A fresh block for one reference: an unnamed free block, else the least recently freed named one."""
        if self._clean:
            b = self._clean.pop()
        elif self._cached:
            b, _ = self._cached.popitem(last=False)
            del self.block_of[self.name_of.pop(b)]
        else:
            raise DodaiError(f"KV pool exhausted: all {self.num_blocks} blocks are in use")
        self.refs[b] = 1
        return b

    def incref(self, b: int) -> None:
        if self.refs[b] == 0:
            self._cached.pop(b, None)
        self.refs[b] += 1

    def decref(self, b: int) -> None:
        if self.refs[b] <= 0:
            raise DodaiError(f"KV pool: block {b} released twice")
        self.refs[b] -= 1
        if self.refs[b] == 0:
            if b in self.name_of:
                self._cached[b] = None
            else:
                self._clean.append(b)

    def lookup(self, name: bytes) -> int | None:
        return self.block_of.get(name)

    def name(self, b: int, name: bytes) -> None:
        """Name a full block (first come: an identical block already named keeps the name)."""
        if name not in self.block_of and b not in self.name_of:
            self.block_of[name] = b
            self.name_of[b] = name


def block_name(parent: bytes, tokens: list[int]) -> bytes:
    """The name of a full block: a hash of the previous block's name and this block's token ids."""
    h = hashlib.blake2b(parent, digest_size=16)
    h.update(b"".join(int(t).to_bytes(4, "little", signed=False) for t in tokens))
    return h.digest()


@dataclass
class _Seq:
    req: object
    tokens: list[int]  # ids whose keys/values are (or are being) stored, in position order
    blocks: list[int] = field(default_factory=list)
    n_cached: int = 0  # positions stored so far
    names: list[bytes] = field(default_factory=list)  # names of the full blocks, in order
    reserved: int = 0  # blocks this sequence may still allocate


class _StepView:
    """The cache protocol (:mod:`dodai.models.protocol`) over B pooled sequences for one forward of t tokens."""

    def __init__(self, pool: PrefixBlockPool, read: torch.Tensor, write: torch.Tensor, key_mask, pos: int):
        self.pool, self.read, self.write = pool, read, write  # (B, S + t) slots, (B·t,) slots
        self.key_mask = key_mask  # (B, S) bool, None when no row is padded
        self.pos = pos  # S

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, t, d = k.shape
        ks, vs = self.pool.k[layer], self.pool.v[layer]
        ks[self.write] = k.transpose(1, 2).reshape(b * t, h, d).to(ks.dtype)
        vs[self.write] = v.transpose(1, 2).reshape(b * t, h, d).to(vs.dtype)
        # (B, S + t, H_kv, D) -> (B, H_kv, S + t, D)
        return ks[self.read].transpose(1, 2), vs[self.read].transpose(1, 2)

    def advance(self, t: int) -> None:
        self.pos += t

    def fused_layout(self, b: int):
        """Where the keys and values of a one-token step live, for the fused native step
        (:func:`dodai.models.fast_decode.fused_step`): the pool's per-layer storage, the (B, S + 1) slot table,
        each row's first real column, and the strides of a slot and of a head (in floats)."""
        pool = self.pool
        if (self.read.shape != (b, self.pos + 1) or self.write.shape != (b,) or pool.dtype != torch.float32
                or self.read.device.type != "cpu"):
            return None
        if self.key_mask is None:
            first = torch.zeros(b, dtype=torch.int32)
        else:  # right-aligned rows: the padding columns come first
            first = (~self.key_mask[:, :self.pos]).sum(dim=1).to(torch.int32)
        h, d = pool.n_kv_head, pool.head_dim
        return pool.k, pool.v, self.read, first, 0, h * d, d, self.pos


class PagedBackend:
    """The engine backend for continuous batching (see the module docstring)."""

    joins_mid_batch = True

    def __init__(self, model, num_blocks: int | None = None, block_size: int = 16, max_batch: int = 16,
                 prefill_chunk: int = 256, prefix_caching: bool = True, context: int | None = None):
        for name, v in (("block_size", block_size), ("max_batch", max_batch), ("prefill_chunk", prefill_chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DodaiError(f"{name} must be a positive integer, got {v!r}")
        self.model = model
        self.context = min(context or model.config.block_size, model.config.block_size)
        if num_blocks is None:  # room for max_batch sequences of the whole context
            num_blocks = max_batch * -(-self.context // block_size)
        self.pool = PrefixBlockPool.for_model(model, num_blocks, block_size)
        self.max_batch, self.prefill_chunk, self.prefix_caching = max_batch, prefill_chunk, prefix_caching
        self.seqs: dict[int, _Seq] = {}  # id(request) -> its sequence (prefilling or running)
        self.prefilling: list[_Seq] = []
        self.reserved = 0  # blocks promised to admitted sequences but not yet allocated
        self.device = model.new_cache(1, 1).k[0].device
        self.prefix_hits = 0  # prompt tokens served from named blocks, over the backend's life
        self.prompt_tokens = 0

    # ---- bookkeeping --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.prefilling)

    @property
    def blocks_total(self) -> int:
        return self.pool.num_blocks

    @property
    def blocks_free(self) -> int:
        return self.pool.num_free

    def _need(self, req) -> int:
        return -(-(len(req.prompt) + req.max_new_tokens) // self.pool.block_size)

    def _match(self, prompt: list[int]) -> list[int]:
        """Named blocks matching the prompt's leading full blocks; never the block of the last prompt token
        (it must go through the model to give the first logits)."""
        if not self.prefix_caching:
            return []
        P, out, parent = self.pool.block_size, [], b""
        for j in range((len(prompt) - 1) // P):
            name = block_name(parent, prompt[j * P:(j + 1) * P])
            b = self.pool.lookup(name)
            if b is None:
                break
            out.append(b)
            parent = name
        return out

    # ---- the engine's calls ---------------------------------------------------------------------
    def take(self, waiting: list, n_running: int) -> list:
        """Admit waiting requests (oldest first) while rows and blocks allow; returns those taken."""
        taken = []
        for req in waiting:
            if n_running + len(self.prefilling) >= self.max_batch:
                break
            if len(req.prompt) + req.max_new_tokens > self.context:
                raise DodaiError(f"prompt + max new tokens ({len(req.prompt) + req.max_new_tokens}) exceed the "
                                 f"server's context of {self.context} tokens")
            need = self._need(req)
            if need > self.pool.num_blocks:
                raise DodaiError(f"the request needs {need} KV blocks, the pool has {self.pool.num_blocks}")
            reuse = self._match(req.prompt)
            cost = need - len(reuse) + sum(1 for b in reuse if self.pool.refs[b] == 0)
            if cost > self.pool.num_free - self.reserved:
                break  # first come, first served: later requests wait behind this one
            seq = _Seq(req, list(req.prompt))
            for b in reuse:
                self.pool.incref(b)
            parent = b""
            for b in reuse:
                parent = self.pool.name_of[b]
                seq.names.append(parent)
            seq.blocks = list(reuse)
            seq.n_cached = len(reuse) * self.pool.block_size
            seq.reserved = need - len(reuse)
            self.reserved += seq.reserved
            req.prompt_cached = seq.n_cached
            self.prefix_hits += seq.n_cached
            self.prompt_tokens += len(req.prompt)
            self.seqs[id(req)] = seq
            self.prefilling.append(seq)
            taken.append(req)
        return taken

    def prefill_step(self) -> tuple[list, torch.Tensor | None]:
        """Prefill chunks (at most ``prefill_chunk`` tokens this step, oldest first); returns the requests
        whose prompt is complete and their last-position logits (k, V)."""
        budget = self.prefill_chunk
        ready, logits = [], []
        for seq in list(self.prefilling):
            if budget <= 0:
                break
            t = min(len(seq.tokens) - seq.n_cached, budget)
            out = self._forward([seq], t)
            budget -= t
            if seq.n_cached == len(seq.tokens):
                self.prefilling.remove(seq)
                ready.append(seq.req)
                logits.append(out)
        return ready, (torch.cat(logits) if logits else None)

    def decode(self, toks: torch.Tensor, reqs: list) -> torch.Tensor:
        """Feed one new token per running request (rows in ``reqs`` order); returns the next logits (B, V)."""
        seqs = [self.seqs[id(r)] for r in reqs]
        for s, t in zip(seqs, toks.tolist()):
            s.tokens.append(t)
        return self._forward(seqs, 1)

    def free(self, reqs: list) -> None:
        for r in reqs:
            seq = self.seqs.pop(id(r), None)
            if seq is None:
                continue
            if seq in self.prefilling:
                self.prefilling.remove(seq)
            for b in seq.blocks:
                self.pool.decref(b)
            self.reserved -= seq.reserved
            seq.blocks, seq.reserved = [], 0

    def drop_cancelled(self) -> list:
        """Requests cancelled while still prefilling: freed now; returned so the engine can mark them."""
        gone = [s.req for s in self.prefilling if s.req.cancelled]
        self.free(gone)
        return gone

    def abort(self) -> None:
        self.free([s.req for s in list(self.seqs.values())])

    def release(self) -> None:
        """Between batches nothing is released: the pool and its named blocks serve the next requests."""

    # ---- one forward over ragged rows ------------------------------------------------------------
    def _forward(self, seqs: list[_Seq], t: int) -> torch.Tensor:
        """Run ``t`` new tokens of every sequence (the tokens after its ``n_cached``); returns the last
        position's logits (B, V) and names the blocks that filled up."""
        P, pool = self.pool.block_size, self.pool
        for s in seqs:  # blocks for the positions written now
            while len(s.blocks) * P < s.n_cached + t:
                s.blocks.append(pool.allocate())
                s.reserved -= 1
                self.reserved -= 1
        lens = [s.n_cached for s in seqs]
        S = max(lens)
        ar = torch.arange(P)
        read, write = [], []
        for s, L in zip(seqs, lens):
            slots = (torch.tensor(s.blocks, dtype=torch.long)[:, None] * P + ar).reshape(-1)[:L + t]
            read.append(torch.cat([torch.full((S - L,), pool.pad_slot, dtype=torch.long), slots]))
            write.append(slots[L:])
        read_t = torch.stack(read).to(self.device)
        write_t = torch.cat(write).to(self.device)
        key_mask = None
        if any(L != S for L in lens):
            key_mask = torch.stack([torch.arange(S) >= S - L for L in lens]).to(self.device)  # (B, S)
        view = _StepView(pool, read_t, write_t, key_mask, S)
        x = torch.tensor([s.tokens[s.n_cached:s.n_cached + t] for s in seqs], dtype=torch.long, device=self.device)
        logits, _ = self.model(x, cache=view, last_only=True)
        for s in seqs:
            s.n_cached += t
            if self.prefix_caching:
                while len(s.names) < s.n_cached // P:  # name every block that is now full
                    j = len(s.names)
                    name = block_name(s.names[-1] if s.names else b"", s.tokens[j * P:(j + 1) * P])
                    pool.name(s.blocks[j], name)
                    s.names.append(name)
        return logits[:, -1, :]
