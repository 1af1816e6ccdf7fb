"""`dodai chat` end to end on a tiny random Llama folder (lines piped through stdin, greedy decoding)."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from dodai.cli import main
from dodai.generate.session import CHATML, ChatSession
from dodai.models.llama import Llama, LlamaConfig
from dodai.tokenizers.bpe import ByteLevelBPE

TEXT = ("the cat sat on the mat. the dog sat on the log. hello there, how are you? "
        "i am fine, thank you. what is the capital of france? paris is the capital. ") * 4


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    tok = ByteLevelBPE.train(TEXT, 300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                      ffn_hidden=64, tie_embeddings=False)
    model = Llama(cfg)
    with torch.no_grad():  # peaked, context-dependent logits instead of a near-uniform random model
        model.tok_embeddings.weight.normal_(0, 1.0)
        model.output.weight.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save(folder, tokenizer=tok)
    return folder


def _chat(folder, lines: str, monkeypatch, capsys, *extra) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    rc = main(["chat", "--model", str(folder), "--temperature", "0", "--max-new-tokens", "6", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def test_chat_is_deterministic_and_reset_clears_history(tiny_folder, monkeypatch, capsys):
    rc, one, _ = _chat(tiny_folder, "hello there\n", monkeypatch, capsys)
    assert rc == 0 and one.strip()  # a non-empty reply, ended by a newline
    assert one.endswith("\n")
    _, again, _ = _chat(tiny_folder, "hello there\n", monkeypatch, capsys)
    assert again == one  # greedy: same input, same reply
    _, reset, err = _chat(tiny_folder, "hello there\n/reset\nhello there\n", monkeypatch, capsys)
    assert reset == one + one  # after /reset the model sees the first turn again
    assert "cleared" in err
    # (that history is kept without /reset is checked on the real model in test_llama_smollm2.py)


def test_chat_commands_and_eof(tiny_folder, monkeypatch, capsys):
    _, one, _ = _chat(tiny_folder, "hello there\n", monkeypatch, capsys)
    rc, out, err = _chat(tiny_folder, "\n  \nhello there\n/exit\nnot answered\n", monkeypatch, capsys)
    assert rc == 0 and out == one  # blank lines skipped, nothing after /exit
    rc, out, err = _chat(tiny_folder, "/bogus\n/system You are a cat.\nhello there\n", monkeypatch, capsys)
    assert rc == 0 and "unknown command /bogus" in err and "system message set" in err
    assert out.strip()
    rc, out, err = _chat(tiny_folder, "", monkeypatch, capsys)  # immediate EOF
    assert rc == 0 and out == ""


def test_chat_too_long_message_is_reported_and_chat_goes_on(tiny_folder, monkeypatch, capsys):
    _, one, _ = _chat(tiny_folder, "hello there\n", monkeypatch, capsys)
    rc, out, err = _chat(tiny_folder, "the cat " * 200 + "\nhello there\n", monkeypatch, capsys, "--context", "64")
    assert rc == 0 and "too long" in err
    assert out.endswith(one)


def test_bad_flags_are_dodai_errors(tiny_folder, monkeypatch, capsys):
    rc, _, err = _chat(tiny_folder, "hi\n", monkeypatch, capsys, "--top-p", "1.5")
    assert rc == 2 and "top-p" in err
    rc, _, err = _chat(tiny_folder, "hi\n", monkeypatch, capsys, "--context", "4")
    assert rc == 2 and "context" in err


def test_session_uses_chatml_without_template_and_stops_on_im_end(tiny_folder):
    from dodai.models import load_model

    model, tok = load_model(str(tiny_folder))
    s = ChatSession(model, tok, temperature=0.0, max_new_tokens=5, context=128)
    assert s.template.source == CHATML
    s.reset("You are a cat.", keep_system=False)  # what /system does
    prompt = tok.decode(s._render_ids([{"role": "user", "content": "hi"}]))
    assert prompt == "<|im_start|>system\nYou are a cat.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
        "<|im_start|>assistant\n"
    im_end = tok.special_tokens["<|im_end|>"]
    assert im_end in s.stop_ids

    class ForceImEnd(torch.nn.Module):  # the model, with <|im_end|> made the most likely next token
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def forward(self, idx, targets=None, cache=None, last_only=False):
            logits, loss = self.inner(idx, targets, cache, last_only)
            logits[..., im_end] = 1e4
            return logits, loss

        def new_cache(self, batch, max_len, dtype=None):
            return self.inner.new_cache(batch, max_len, dtype)

    s.model = ForceImEnd()
    assert s.reply("hello") == ""  # stopped at once: <|im_end|> is not part of the reply
    assert s.messages[-1] == {"role": "assistant", "content": ""}
