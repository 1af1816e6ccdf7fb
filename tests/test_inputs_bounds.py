"""Hostile files and paths: data readers and weight loaders end in one-line errors, fast, with bounded
memory (each case in its own process; peak RSS read with ru_maxrss).

- data readers through the CLI (``dodai tokenizer train --data``, ``dodai data prepare``, ``dodai rag index
  --corpus``, ``dodai pretrain --data``): ``/dev/zero``, a FIFO with no writer, files larger than the read
  cap (sparse, so they cost no disk), JSON Lines nested 200,000 deep, a folder tree 1,200 deep;
- the file-format readers (safetensors header, GGUF header) on hand-made files: a header of 200,000 ``[``,
  a GGUF string or array that claims a gigabyte (backed by a sparse file, so every length check on "bytes
  left" passes and only the absolute bounds stop it).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time

import pytest

from dodai.errors import DodaiError
from dodai.io import MAX_USER_FILE_BYTES, read_user_bytes, read_user_text, read_user_texts

_LAUNCHER = ("import resource, subprocess, sys\n"
             "rc = subprocess.call(sys.argv[2:])\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
             "sys.exit(rc)\n")


def _limit_memory():  # a regression must fail the test, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _sparse(path, size: int, head: bytes = b"") -> str:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return str(path)


@pytest.fixture(scope="module")
def hostile_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-inputs")
    fifo = d / "fifo.txt"
    os.mkfifo(fifo)
    deep = d / "deep.jsonl"
    deep.write_text('{"text": "ok"}\n' + "[" * 200_000 + "\n", encoding="utf-8")
    # 1,200 nested folders with one text file at the bottom (a recursive walk hits Python's recursion limit)
    tree = [d / "tree"]
    tree[0].mkdir()
    for _ in range(1200):
        tree.append(tree[-1] / "a")
        tree[-1].mkdir()
    (tree[-1] / "doc.txt").write_text("deep down\n", encoding="utf-8")
    yield {"fifo": str(fifo), "deep": str(deep), "big": _sparse(d / "big.txt", MAX_USER_FILE_BYTES + 1),
           "half1": _sparse(d / "half1.txt", MAX_USER_FILE_BYTES // 2 + 1),
           "half2": _sparse(d / "half2.txt", MAX_USER_FILE_BYTES // 2 + 1), "out": str(d / "out"),
           "tree": str(tree[0])}
    (tree[-1] / "doc.txt").unlink()  # bottom up: shutil.rmtree would recurse 1,200 deep
    for folder in reversed(tree):
        folder.rmdir()


# name: (arguments, a fragment of the one error line, imports torch)
CLI_CASES = {
    "tokenizer_dev_zero": (["tokenizer", "train", "--data", "/dev/zero", "--out", "{out}"], "character device", 0),
    "tokenizer_fifo": (["tokenizer", "train", "--data", "{fifo}", "--out", "{out}"], "FIFO", 0),
    "tokenizer_too_big": (["tokenizer", "train", "--data", "{big}", "--out", "{out}"], "more than dodai reads", 0),
    "tokenizer_together_too_big": (["tokenizer", "train", "--data", "{half1}", "{half2}", "--out", "{out}"],
                                   "together", 0),
    "prepare_dev_zero": (["data", "prepare", "/dev/zero", "--out", "{out}"], "character device", 0),
    "prepare_fifo": (["data", "prepare", "{fifo}", "--out", "{out}"], "FIFO", 0),
    "prepare_deep_jsonl": (["data", "prepare", "{deep}", "--out", "{out}"], "nested too deeply", 0),
    "prepare_deep_folder": (["data", "prepare", "{tree}", "--out", "{out}"], "nested more than", 0),
    "rag_fifo": (["rag", "index", "--corpus", "{fifo}", "--out", "{out}", "--no-dense", "--quiet"], "FIFO", 0),
    "rag_deep_folder": (["rag", "index", "--corpus", "{tree}", "--out", "{out}", "--no-dense", "--quiet"],
                        "nested more than", 0),
    "rag_deep_jsonl": (["rag", "index", "--corpus", "{deep}", "--out", "{out}", "--no-dense", "--quiet"],
                       "not valid JSON", 0),
    "pretrain_dev_zero": (["pretrain", "--data", "/dev/zero", "--out", "{out}"], "character device", 1),
}
MAX_RSS_MB = 200  # the CLI without torch peaks at ~30 MB; reading the sparse files would take a gigabyte
MAX_RSS_TORCH_MB = 600  # with torch imported (~230 MB)


def test_data_readers_refuse_hostile_paths_through_the_cli(hostile_paths, tmp_path):
    procs = {}
    for name, (args, _, _) in CLI_CASES.items():
        argv = [a.format(**hostile_paths) for a in args]
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(tmp_path / f"{name}.rss"), sys.executable, "-m", "dodai", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_limit_memory, start_new_session=True)
    t0 = time.monotonic()
    bad = []
    for name, proc in procs.items():
        fragment, torch = CLI_CASES[name][1], CLI_CASES[name][2]
        try:
            out, err = proc.communicate(timeout=max(5.0, 60 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:  # e.g. blocked opening the FIFO: the launcher and its child
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            bad.append((name, "timed out"))
            continue
        lines = err.strip().splitlines()
        rss = int((tmp_path / f"{name}.rss").read_text()) // 1024
        if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("dodai: error:") \
                or fragment not in lines[0]:
            bad.append((name, proc.returncode, err[-600:]))
        elif rss > (MAX_RSS_TORCH_MB if torch else MAX_RSS_MB):
            bad.append((name, f"{rss} MB"))
    assert not bad, bad
    assert time.monotonic() - t0 < 60  # all together, on a loaded machine (each alone: < 1 s, pretrain ~6 s)


def test_folder_walk_skips_what_is_not_a_regular_file(tmp_path):
    from dodai.io import user_files_in

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "B.MD").write_text("b")
    (tmp_path / "c.json").write_text("{}")
    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    (tmp_path / "loop").symlink_to(tmp_path)  # a symlinked folder is not followed
    (tmp_path / "link.txt").symlink_to(tmp_path / "sub" / "a.txt")  # a symlinked file is
    got = sorted(p.relative_to(tmp_path).as_posix() for p in user_files_in(tmp_path, (".txt", ".md")))
    assert got == ["B.MD", "link.txt", "sub/a.txt"]


def test_read_user_text_reads_only_regular_files_and_at_most_their_size(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("héllo\n", encoding="utf-8")
    assert read_user_text(p) == "héllo\n"
    assert read_user_texts([p, p]) == ["héllo\n", "héllo\n"]
    with pytest.raises(DodaiError, match="folder"):
        read_user_text(tmp_path)
    with pytest.raises(DodaiError, match="no such file"):
        read_user_text(tmp_path / "missing.txt")
    with pytest.raises(DodaiError, match="more than dodai reads"):
        read_user_text(p, max_bytes=3)
    with pytest.raises(DodaiError, match="together"):
        read_user_texts([p, p], max_total_bytes=10)
    (tmp_path / "e.txt").write_text("  \n")
    assert read_user_texts([p, tmp_path / "e.txt"], skip_empty=True) == ["héllo\n"]
    # a /proc file reports size 0 however much it would yield: nothing is read
    assert len(read_user_bytes("/proc/self/status")) == 0
    with pytest.raises(DodaiError, match="empty"):
        read_user_text("/proc/self/status")


# ---- the file-format readers, each case in a fork of one child ---------------------------------------------

def _st(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _s(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf_head(n_kv: int, n_tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


GIB = 1 << 30
LOADER_CASES = {  # name: (file name, (bytes at the start, sparse size or 0), a fragment of the error)
    "st_200k_brackets": ("a.safetensors", (_st(b"[" * 200_000), 0), "nested too deeply"),
    "st_100k_objects": ("b.safetensors", (_st(b'{"a":' * 100_000), 0), "nested too deeply"),
    "st_2m_values": ("c.safetensors", (_st(b"[" + b"0," * 2_000_000 + b"0]"), 0), "JSON values"),
    "gguf_1gib_string": ("a.gguf", (_gguf_head(1) + _s(b"k") + struct.pack("<IQ", 8, GIB), GIB + 64),
                         "for one string"),
    "gguf_1g_item_array": ("b.gguf", (_gguf_head(1) + _s(b"k") + struct.pack("<IIQ", 9, 0, GIB), GIB + 64),
                           "items exceeds the limit"),
    "gguf_1g_string_array": ("c.gguf", (_gguf_head(1) + _s(b"k") + struct.pack("<IIQ", 9, 8, GIB // 8),
                                        GIB + 64), "items exceeds the limit"),
    "gguf_many_tensors": ("d.gguf", (_gguf_head(0, 1 << 20), 40 << 20), "tensor count"),
    "gguf_nested_arrays": ("e.gguf", (_gguf_head(1) + _s(b"k") + struct.pack("<I", 9)
                                      + struct.pack("<IQ", 9, 1) * 6 + struct.pack("<IQ", 0, 0), 0), "nested"),
}

_LOADER_CHILD = r"""
import json, os, sys, time, traceback
from dodai.errors import DodaiError
from dodai.weights.gguf import GGUFFile
from dodai.weights.safetensors import read_header
cases = list(json.load(sys.stdin).items())
out = []
for name, path in cases:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t0 = time.monotonic()
        try:
            if path.endswith(".gguf"):
                GGUFFile(path).close()
            else:
                read_header(path)
            kind, msg = "read", ""
        except DodaiError as e:
            kind, msg = "DodaiError", str(e)
        except BaseException as e:
            kind, msg = "other", "".join(traceback.format_exception(e))[-3000:]
        os.write(w, json.dumps({"name": name, "seconds": time.monotonic() - t0, "kind": kind, "message": msg})
                 .encode())
        os._exit(0)
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    data = b"".join(iter(lambda: os.read(r, 65536), b""))
    os.close(r)
    rec = json.loads(data) if data else {"name": name, "seconds": 0, "kind": f"died ({status})", "message": ""}
    rec["rss_mb"] = usage.ru_maxrss // 1024
    out.append(rec)
print(json.dumps(out))
"""


def test_weight_file_readers_refuse_hostile_headers_with_bounded_memory(tmp_path):
    paths = {}
    for name, (fname, (head, size), _) in LOADER_CASES.items():
        paths[name] = _sparse(tmp_path / fname, max(size, len(head)), head)
    proc = subprocess.run([sys.executable, "-c", _LOADER_CHILD], input=json.dumps(paths), capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bad = []
    for rec in json.loads(proc.stdout):
        fragment = LOADER_CASES[rec["name"]][2]
        if rec["kind"] != "DodaiError" or "\n" in rec["message"] or fragment not in rec["message"]:
            bad.append((rec["name"], rec["kind"], rec["message"][-600:]))
        elif rec["seconds"] > 5 or rec["rss_mb"] > 150:  # baseline ~45 MB (numpy); 1 GiB if built
            bad.append((rec["name"], f"{rec['seconds']:.1f} s", f"{rec['rss_mb']} MB"))
    assert not bad, bad


def test_gguf_total_array_items_are_bounded(tmp_path, monkeypatch):
    """A demonstration of the total bound at a small scale (real-size files would take 16 M items)."""
    import dodai.weights.gguf as gguf

    monkeypatch.setattr(gguf, "MAX_METADATA_ITEMS", 10)
    arr = struct.pack("<IQ", 0, 6) + b"\0" * 6  # uint8[6]
    path = tmp_path / "t.gguf"
    path.write_bytes(_gguf_head(1) + _s(b"a") + struct.pack("<I", 9) + arr)
    gguf.GGUFFile(path).close()  # 6 items: fine
    path.write_bytes(_gguf_head(2) + _s(b"a") + struct.pack("<I", 9) + arr + _s(b"b") + struct.pack("<I", 9) + arr)
    with pytest.raises(DodaiError, match="in all"):
        gguf.GGUFFile(path)
