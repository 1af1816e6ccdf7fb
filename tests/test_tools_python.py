"""The python sandbox: every red-team attack refused or bounded with the host unharmed, benign code runs,
and the kernel limits hold on their own (with the audit hook switched off). The OS sandbox's own escapes
are in ``test_tools_python_osbox.py``."""

from __future__ import annotations

import os
import time

import pytest

from dodai.tools.base import ToolError
from dodai.tools.osbox import WORKDIR
from dodai.tools.python_sandbox import MARKER, python_tool, run_python
from dodai.tools.redteam import PYTHON, PYTHON_OK, Harness

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module", autouse=True)
def sandbox():
    from dodai.tools.osbox import SandboxUnavailable, find_sandbox

    try:
        return find_sandbox()
    except SandboxUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("py-redteam"), python_timeout_s=1.0, memory_mb=128, n_docs=50)


@pytest.mark.parametrize("case", PYTHON + PYTHON_OK, ids=lambda c: f"{c.expect}-{c.name}")
def test_redteam_case(harness, case):
    out = harness.run(case)
    assert out.passed, out.why
    assert harness.canary.read_text(encoding="utf-8") == "the canary is alive\n"
    assert not (harness.outside / "pwned").exists()


def test_every_attack_is_harmless_without_the_hook(harness):
    """The OS sandbox alone: with the audit hook left out, no attack changes the host, reveals what it
    must not, or runs past its time and output bounds (a refusal message is not required)."""
    from dodai.tools.python_sandbox import python_tool as make

    plain = harness.tools["python"]
    harness.tools["python"] = make(0.5, 128, audit_hook=False)  # a shorter clock: the timeouts are not the point
    try:
        harmful = []
        for case in [c for c in PYTHON if c.attack]:
            harness.reset()
            out = harness.run(case, harm_only=True)
            if not out.passed:
                harmful.append((case.name, out.why))
    finally:
        harness.tools["python"] = plain
        harness.reset()
    assert not harmful, harmful


def test_work_dir_is_fresh():
    first = run_python("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())", 2.0, 128)
    second = run_python("import os\nprint(os.getcwd(), os.listdir('.'))", 2.0, 128)
    assert first.output.strip() == WORKDIR and second.output.split() == [WORKDIR, "[]"]  # a new tmpfs each time


def test_environment_is_empty_and_isolated():
    r = run_python("import os, sys\nprint(sorted(os.environ), sys.flags.isolated, sys.flags.no_site, sys.path)",
                   2.0, 128)
    assert r.returncode == 0, r.output
    keys, rest = r.output.split("]", 1)
    assert keys.strip() == "['TMPDIR'"  # only the sandbox's own TMPDIR (its temp dir)
    assert " 1 1 " in rest and "site-packages" not in rest


def test_output_is_the_tail():
    r = python_tool(timeout_s=2.0, memory_mb=128).call({"code": "for i in range(5000):\n    print('line', i)"})
    assert r.startswith("… [") and r.rstrip().endswith("line 4999")
    assert len(r) < 2300


def test_exit_status_and_traceback_are_shown():
    r = python_tool(timeout_s=2.0, memory_mb=128).call({"code": "print('before')\nraise ValueError('bad')"})
    assert r.startswith("before") and "ValueError: bad" in r and r.endswith("[exit status 1]")
    assert "<string>" not in r  # the sandbox's own frames are not shown


@pytest.mark.parametrize("args,msg", [({"code": ""}, "empty"), ({"code": "x" * 200_001}, "longer"),
                                      ({"code": "print(1)\x00"}, "NUL"), ({"code": 5}, "type string"),
                                      ({}, "missing")])
def test_bad_arguments(args, msg):
    with pytest.raises(ToolError, match=msg):
        python_tool().call(args)


# ---- the OS sandbox and kernel limits alone (audit hook off): the real boundary --------------------------
def test_no_new_processes_without_the_hook():
    code = ("import os\nn = 0\nfor _ in range(20):\n    try:\n        pid = os.fork()\n    except OSError:\n"
            "        break\n    if pid == 0:\n        os._exit(0)\n    n += 1\nprint('forked', n)")
    r = run_python(code, 2.0, 128, audit_hook=False)
    assert r.output.strip() == "forked 0", r.output  # seccomp refuses fork/clone; RLIMIT_NPROC = 1 behind it


def test_memory_limit_without_the_hook():
    r = run_python("x = bytearray(512 * 2**20)\nprint('allocated')", 2.0, 128, audit_hook=False)
    assert "MemoryError" in r.output and "allocated" not in r.output


def test_cpu_limit_without_the_hook():
    t0 = time.perf_counter()
    r = run_python("while True:\n    pass", 1.0, 128, audit_hook=False)
    assert r.returncode is not None and r.returncode < 0 and time.perf_counter() - t0 < 5.0


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop happens only when the host runs as root")
def test_unsafe_mode_keeps_the_uid_drop_without_the_hook(tmp_path):
    """Without the OS sandbox (``unsafe_no_sandbox``), as root, the child still drops to an unprivileged uid."""
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    r = run_python(f"import os\nprint(os.getuid())\nopen({str(canary)!r}, 'w').write('pwned')", 2.0, 128,
                   audit_hook=False, unsafe_no_sandbox=True)
    assert r.output.split()[0] != "0" and "PermissionError" in r.output
    assert canary.read_text() == "alive"


def test_hook_refuses_with_the_marker():
    r = run_python("open('/etc/hostname').read()", 2.0, 128)
    assert MARKER in r.output
    r = run_python("open('/etc/hostname').read()", 2.0, 128, audit_hook=False)
    assert MARKER not in r.output  # the switch really switches the hook off


# ---- the audit hook as the only file-system/network layer (no OS sandbox, no uid drop) ----------------------
# A friendly first line, not the boundary: test_tools_python_osbox.py shows programs that get past it.
HOOK_ONLY = ["os_system", "read_passwd", "read_traversal", "write_canary", "write_outside", "remove_canary",
             "symlink_escape", "list_root", "socket_connect", "ctypes", "kill_parent", "builtins_reimport"]


@pytest.mark.parametrize("name", HOOK_ONLY)
def test_hook_alone_refuses_without_uid_drop(harness, name):
    from dodai.tools.base import Tool
    from dodai.tools.python_sandbox import _format

    case = next(c for c in PYTHON if c.name == name)
    plain = harness.tools["python"]
    no_drop = Tool(plain.name, plain.description, plain.parameters,
                   lambda a: _format(run_python(a["code"], 1.0, 128, drop_privileges=False,
                                                unsafe_no_sandbox=True), 1.0, 128),
                   plain.max_output_chars)
    harness.tools["python"] = no_drop
    try:
        out = harness.run(case)
    finally:
        harness.tools["python"] = plain
    assert out.passed, out.why
    assert MARKER in (out.result or "") or "None in sys.modules" in (out.result or "")


def test_pidfd_signals_are_taken_away():
    r = run_python("import os, _signal\nprint(hasattr(os, 'pidfd_open'), hasattr(_signal, 'pidfd_send_signal'))",
                   2.0, 128)
    assert r.output.strip() == "False False", r.output
