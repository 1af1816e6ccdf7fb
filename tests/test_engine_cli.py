"""``dodai generate`` with the engine flags, on a saved tiny GPT run folder."""

import json

import torch

from dodai.generate.engine import complete
from dodai.generate.processors import LogitsPipeline
from dodai.models.gpt import GPT, GPTConfig


def _save_run(tmp_path):
    from dodai.tokenizers.char import CharTokenizer

    tok = CharTokenizer.train("hello world, this is a tiny test of the generator.\n")
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16, tie_weights=False))
    with torch.no_grad():
        m.lm_head.weight.mul_(12)
    m.save(tmp_path)
    tok.save(tmp_path)
    return m.eval(), tok


def test_cli_engine_flags(tmp_path, capsys):
    from dodai.cli import main

    m, tok = _save_run(tmp_path)
    base = ["generate", "--model", str(tmp_path), "--prompt", "hello", "--max-new-tokens", "20", "--seed", "2",
            "--temperature", "0.9", "--repetition-penalty", "1.3", "--min-p", "0.05"]
    assert main(base) == 0
    out = capsys.readouterr().out
    pipe = LogitsPipeline(temperature=0.9, repetition_penalty=1.3, min_p=0.05)
    ref = complete(m, tok.encode("hello"), 20, pipe, seed=2, tokenizer=tok, eos_id=tok.eos_id)[0]
    assert out == ref.text + "\n"

    stop = ref.text[3:5]
    assert main(base + ["--stop", stop]) == 0
    assert capsys.readouterr().out == ref.text[:ref.text.find(stop)] + "\n"

    assert main(base + ["--num-samples", "3", "--logprobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("--- sample") for line in lines) == 3
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert rows and all(len(r["top"]) == 2 and r["logprob"] <= 0 for r in rows)

    assert main(base + ["--no-repeat-ngram-size", "0"]) == 2
