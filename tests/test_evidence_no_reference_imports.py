"""dodai/ never imports a reference library, nor reads data out of an installed package's folder; the one
optional extra the product uses (pyarrow, ``dodai[glove]``) is imported in one declared place only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

DODAI = Path(__file__).resolve().parent.parent / "dodai"
REFERENCE = {"transformers", "tokenizers", "sentence_transformers", "sentencepiece", "gguf", "gensim", "trl",
             "llama_cpp", "openai", "sklearn", "scipy", "rank_bm25", "accelerate", "safetensors", "datasets"}
OPTIONAL_EXTRAS = {"pyarrow": {"dodai/data/glove.py"}}  # named in pyproject's [glove] extra and the README


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def test_no_reference_library_is_imported_by_dodai():
    bad = []
    for f in sorted(DODAI.rglob("*.py")):
        rel = f.relative_to(DODAI.parent).as_posix()
        for mod in _imports(f):
            if mod in REFERENCE:
                bad.append(f"{rel} imports {mod}")
            if mod in OPTIONAL_EXTRAS and rel not in OPTIONAL_EXTRAS[mod]:
                bad.append(f"{rel} imports the optional {mod} outside {OPTIONAL_EXTRAS[mod]}")
    assert not bad, "\n".join(bad)


def test_no_data_is_read_from_an_installed_reference_package():
    # locating an installed package's folder to read its files (checking whether a library is installed, to
    # skip an optional comparison, is fine)
    pat = re.compile(r"submodule_search_locations")
    bad = [f.relative_to(DODAI.parent).as_posix() for f in DODAI.rglob("*.py")
           if pat.search(f.read_text(encoding="utf-8"))]
    assert not bad, bad


def test_the_check_sees_an_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from transformers import AutoModel\n    import gensim.models\n")
    assert {"transformers", "gensim"} <= _imports(f)
