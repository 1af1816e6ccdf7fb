"""`dodai bench generate` on a tiny random GPT: fields, KV cache byte accounting, window errors."""

from __future__ import annotations

import json

import pytest
import torch

from dodai.bench import prompt_ids
from dodai.cli import main
from dodai.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from dodai.tokenizers.char import CharTokenizer

    d = tmp_path_factory.mktemp("bench_run")
    tok = CharTokenizer.train("hello world, this is a tiny benchmark text.\n")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=24,
                    tie_weights=False)  # GQA: the cache holds 2 kv heads, not 4
    GPT(cfg).save(d)
    tok.save(d)
    return d, cfg


def test_bench_generate_json_fields_and_kv_accounting(run_dir, capsys):
    d, cfg = run_dir
    rc = main(["bench", "generate", "--model", str(d), "--prompt-tokens", "8", "--new-tokens", "8",
               "--no-cache-tokens", "8", "--repeats", "1", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    head_dim = cfg.n_embd // cfg.n_head
    # fp32: K and V, each n_kv_head x head_dim floats of 4 bytes, per token per layer
    assert out["kv_bytes_per_token_per_layer"] == 2 * cfg.n_kv_head * head_dim * 4
    assert out["kv_bytes_per_token"] == cfg.n_layer * out["kv_bytes_per_token_per_layer"]
    assert out["kv_bytes_total"] == (8 + 8) * out["kv_bytes_per_token"]
    assert out["params"] == sum(p.numel() for p in GPT(cfg).parameters())
    assert out["weight_dtype"] == "float32"
    for k in ("prefill_s", "decode_tok_s", "uncached_tok_s", "cached_tok_s_at_no_cache_tokens", "cache_speedup"):
        assert out[k] > 0 and out[k] != float("inf"), k
    assert out["peak_rss_mb"] > 10


def test_bench_generate_table_and_bf16(run_dir, capsys):
    d, cfg = run_dir
    rc = main(["bench", "generate", "--model", str(d), "--prompt-tokens", "4", "--new-tokens", "4",
               "--no-cache-tokens", "4", "--repeats", "1", "--threads", "1", "--dtype", "bfloat16"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "KV cache bytes / token / layer" in table and "KV cache speed-up" in table
    # bf16 halves the per-element size: 2 bytes
    assert f"{2 * cfg.n_kv_head * (cfg.n_embd // cfg.n_head) * 2:,} (2 x {cfg.n_kv_head} kv heads" in table
    assert "bfloat16" in table


def test_bench_generate_weight_format(run_dir, capsys):
    d, cfg = run_dir
    rc = main(["bench", "generate", "--model", str(d), "--prompt-tokens", "4", "--new-tokens", "4",
               "--no-cache-tokens", "4", "--repeats", "1", "--threads", "1", "--format", "int8", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weight_format"] == "int8" and out["decode_tok_s"] > 0
    assert out["params"] == sum(p.numel() for p in GPT(cfg).parameters())  # counted before quantization
    assert main(["bench", "generate", "--model", str(d), "--format", "int8", "--dtype", "bfloat16"]) == 2


@pytest.mark.parametrize("argv", [
    ["--prompt-tokens", "30", "--new-tokens", "3", "--no-cache-tokens", "2"],   # 33 > 32 (cached run)
    ["--prompt-tokens", "20", "--new-tokens", "4", "--no-cache-tokens", "13"],  # 33 > 32 (no-cache run)
    ["--new-tokens", "1"],
    ["--repeats", "0"],
])
def test_bench_generate_bad_sizes_are_one_line_errors(run_dir, capsys, argv):
    d, _ = run_dir
    rc = main(["bench", "generate", "--model", str(d), "--repeats", "1", "--threads", "1",
               "--prompt-tokens", "4", "--no-cache-tokens", "4", *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dodai: error:")
    if argv[1] in ("30", "20"):
        assert "context window (32 tokens)" in err[-1]


def test_prompt_ids_deterministic_and_in_range():
    a = prompt_ids(50, 300)
    assert a == prompt_ids(50, 300) and len(a) == 300
    assert all(0 <= i < 50 for i in a)
    assert len(set(a)) > 40  # spread over the vocabulary, not a constant
    assert prompt_ids(50, 300, seed=1) != a
