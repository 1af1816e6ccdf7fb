"""Encoder–decoder (Seq2Seq) with three decoders: a fixed context vector, Bahdanau (additive) attention and
Luong (multiplicative) attention (R3.3).

Notation: B batch, S source length, T target length, E embedding size, H hidden size, V vocabulary.

* **Encoder**: embedding + a bidirectional GRU (dodai's from-scratch :class:`dodai.models.rnn.GRU`). Padding
  is handled exactly: the backward direction reads each sequence reversed *within its own length*, so pads
  never enter a real state; the final forward state is taken at each sequence's last real token.
  Memory: ``enc`` (B, S, 2H) and the initial decoder state ``tanh(W [h_fwd; h_bwd])`` (B, H).
* **"none"** (Sutskever et al. 2014; Cho et al. 2014): the decoder sees only a fixed context vector
  ``c`` = the encoder's summary, fed at every step together with the previous token:
  s_t = GRU([e(y_{t-1}); c], s_{t-1}),  logits = W_o [s_t; c; e(y_{t-1})].
* **"bahdanau"** (Bahdanau, Cho & Bengio 2015, additive): the score uses the *previous* decoder state,
  a_tj = softmax_j(v^T tanh(W_s s_{t-1} + W_h h_j)),  c_t = Σ_j a_tj h_j,
  s_t = GRU([e(y_{t-1}); c_t], s_{t-1}),  logits = W_o [s_t; c_t; e(y_{t-1})].
* **"luong"** (Luong, Pham & Manning 2015, "general" multiplicative, with input feeding): the score uses
  the *current* state, s_t = GRU([e(y_{t-1}); h~_{t-1}], s_{t-1}),  a_tj = softmax_j(s_t^T W_a h_j),
  c_t = Σ_j a_tj h_j,  h~_t = tanh(W_c [c_t; s_t]),  logits = W_o h~_t.

Training is teacher-forced; decoding is greedy or beam search (:mod:`dodai.generate.beam`) through
:meth:`Seq2Seq.beam_step`. The decoder state is a tuple of tensors with the batch on dim 0, so beam
search can reorder it generically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.models.rnn import GRU, GRUCell

ATTENTIONS = ("none", "bahdanau", "luong")


@dataclass
class Seq2SeqConfig:
    src_vocab: int  # source vocabulary size
    tgt_vocab: int  # target vocabulary size (ids 0, 1, 2 = PAD, BOS, EOS)
    emb: int = 32  # E, embedding size (source and target)
    hidden: int = 64  # H, decoder state size; each encoder direction also has H
    attention: str = "bahdanau"  # "none" | "bahdanau" | "luong"
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if config.attention not in ATTENTIONS:
            raise DodaiError(f"attention must be one of {ATTENTIONS}, got {config.attention!r}")
        self.config = c = config
        E, H = c.emb, c.hidden
        self.src_emb = nn.Embedding(c.src_vocab, E, padding_idx=c.pad_id)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, E, padding_idx=c.pad_id)
        self.enc_fwd = GRU(E, H, batch_first=True)
        self.enc_bwd = GRU(E, H, batch_first=True)
        self.bridge = nn.Linear(2 * H, H)  # encoder summary -> initial decoder state
        if c.attention == "none":
            self.ctx = nn.Linear(2 * H, 2 * H)  # the fixed context vector c
            self.cell = GRUCell(E + 2 * H, H)
            self.out = nn.Linear(H + 2 * H + E, c.tgt_vocab)
        elif c.attention == "bahdanau":
            self.W_s = nn.Linear(H, H, bias=False)
            self.W_h = nn.Linear(2 * H, H)
            self.v = nn.Linear(H, 1, bias=False)
            self.cell = GRUCell(E + 2 * H, H)
            self.out = nn.Linear(H + 2 * H + E, c.tgt_vocab)
        else:
            self.W_a = nn.Linear(2 * H, H, bias=False)  # score = s^T W_a h
            self.cell = GRUCell(E + H, H)  # input feeding: [e(y); h~_{t-1}]
            self.W_c = nn.Linear(2 * H + H, H)
            self.out = nn.Linear(H, c.tgt_vocab)

    # ------------------------------------------------------------------ encoder
    def encode(self, src: torch.Tensor, src_len: torch.Tensor):
        """src (B, S) right-padded ids, src_len (B,) -> memory (enc (B, S, 2H), keys, mask (B, S), summary)."""
        if src.dim() != 2 or src_len.shape != (src.shape[0],):
            raise DodaiError(f"src must be (B, S) with src_len (B,), got {tuple(src.shape)}, {tuple(src_len.shape)}")
        if src.shape[1] == 0 or int(src_len.min()) < 1 or int(src_len.max()) > src.shape[1]:
            raise DodaiError("every source sequence needs 1..S tokens")
        B, S = src.shape
        pos = torch.arange(S)[None, :]  # (1, S)
        mask = pos < src_len[:, None]  # (B, S) True on real tokens
        # reverse each sequence within its length: index len-1-j for j < len, pads stay in place
        rev_idx = torch.where(mask, src_len[:, None] - 1 - pos, pos)  # (B, S)
        x = self.src_emb(src)  # (B, S, E)
        fwd, _ = self.enc_fwd(x)  # (B, S, H)
        bwd_rev, _ = self.enc_bwd(x.gather(1, rev_idx[:, :, None].expand_as(x)))
        bwd = bwd_rev.gather(1, rev_idx[:, :, None].expand_as(bwd_rev))  # (B, S, H) back in source order
        enc = torch.cat([fwd, bwd], dim=2) * mask[:, :, None]  # (B, S, 2H), zero on pads
        last = fwd[torch.arange(B), src_len - 1]  # (B, H) forward state after the last real token
        first = bwd[:, 0]  # (B, H) backward state after reading the whole sequence
        summary = torch.cat([last, first], dim=1)  # (B, 2H)
        keys = self.W_h(enc) if self.config.attention == "bahdanau" else (
            self.W_a(enc) if self.config.attention == "luong" else enc.new_zeros(B, 0))
        return {"enc": enc, "keys": keys, "mask": mask, "summary": summary}

    def init_state(self, memory):
        """Decoder state: (s (B, H), extra) with extra = c (none), unused zeros (bahdanau) or h~ (luong)."""
        s = torch.tanh(self.bridge(memory["summary"]))
        if self.config.attention == "none":
            return s, torch.tanh(self.ctx(memory["summary"]))
        return s, torch.zeros_like(s)

    # ------------------------------------------------------------------ one decoder step
    def _attend(self, scores, memory):
        scores = scores.masked_fill(~memory["mask"], float("-inf"))  # (B, S)
        a = torch.softmax(scores, dim=1)
        return a, torch.bmm(a[:, None, :], memory["enc"])[:, 0]  # (B, S), context (B, 2H)

    def decode_step(self, memory, state, prev: torch.Tensor):
        """prev (B,) previous target tokens -> logits (B, V), new state, attention weights (B, S) or None."""
        s, extra = state
        e = self.tgt_emb(prev)  # (B, E)
        kind = self.config.attention
        if kind == "none":
            c = extra
            s = self.cell(torch.cat([e, c], 1), s)
            return self.out(torch.cat([s, c, e], 1)), (s, c), None
        if kind == "bahdanau":
            scores = self.v(torch.tanh(memory["keys"] + self.W_s(s)[:, None, :]))[:, :, 0]  # (B, S)
            a, c = self._attend(scores, memory)
            s = self.cell(torch.cat([e, c], 1), s)
            return self.out(torch.cat([s, c, e], 1)), (s, extra), a
        s = self.cell(torch.cat([e, extra], 1), s)  # luong: input feeding of h~_{t-1}
        scores = torch.bmm(memory["keys"], s[:, :, None])[:, :, 0]  # (B, S) = s^T W_a h_j
        a, c = self._attend(scores, memory)
        h_tilde = torch.tanh(self.W_c(torch.cat([c, s], 1)))
        return self.out(h_tilde), (s, h_tilde), a

    # ------------------------------------------------------------------ training and decoding
    def forward(self, src, src_len, tgt_in, targets=None):
        """Teacher forcing: tgt_in (B, T) starts with BOS -> logits (B, T, V), loss (mean over non-PAD targets)."""
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        logits = []
        for t in range(tgt_in.shape[1]):
            lg, state, _ = self.decode_step(memory, state, tgt_in[:, t])
            logits.append(lg)
        logits = torch.stack(logits, 1)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=self.config.pad_id)
        return logits, loss

    @torch.no_grad()
    def greedy(self, src, src_len, max_len: int = 20):
        """Greedy decode -> (list of token lists without EOS, attention (B, T, S) or None, sum log-probs (B,))."""
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        B = src.shape[0]
        prev = torch.full((B,), self.config.bos_id, dtype=torch.long)
        toks, attns, lp = [], [], torch.zeros(B)
        done = torch.zeros(B, dtype=torch.bool)
        for _ in range(max_len):
            lg, state, a = self.decode_step(memory, state, prev)
            logp = torch.log_softmax(lg, -1)
            prev = logp.argmax(-1)
            lp += torch.where(done, torch.zeros(B), logp.gather(1, prev[:, None])[:, 0])
            toks.append(prev)
            if a is not None:
                attns.append(a)
            done |= prev == self.config.eos_id
            if done.all():
                break
        toks = torch.stack(toks, 1).tolist()
        out = [seq[:seq.index(self.config.eos_id)] if self.config.eos_id in seq else seq for seq in toks]
        return out, (torch.stack(attns, 1) if attns else None), lp

    def beam_step(self, src, src_len, num_beams: int):
        """(step, state) for :func:`dodai.generate.beam.beam_search`: memory repeated W times per item."""
        memory = self.encode(src, src_len)
        memory = {k: v.repeat_interleave(num_beams, dim=0) for k, v in memory.items()}
        bos = self.config.bos_id

        def step(st, tokens):
            mem, dec = st
            if tokens is None:
                tokens = torch.full((mem["enc"].shape[0],), bos, dtype=torch.long)
            lg, dec, _ = self.decode_step(mem, dec, tokens)
            return torch.log_softmax(lg, -1), (mem, dec)

        return step, (memory, self.init_state(memory))

    # ------------------------------------------------------------------ save / load
    def save(self, folder: str | Path) -> None:
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        atomic_write_json(folder / "config.json", asdict(self.config))

    @classmethod
    def load(cls, folder: str | Path) -> Seq2Seq:
        from dodai.weights.safetensors import load_file

        folder = Path(folder)
        try:
            cfg = Seq2SeqConfig(**read_user_json(folder / "config.json", what="model config"))
        except (OSError, TypeError, ValueError) as e:
            raise DodaiError(f"cannot read seq2seq config in {folder}: {e}") from None
        model = cls(cfg)
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model
