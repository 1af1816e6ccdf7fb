"""The python tool's OS sandbox (bubblewrap namespaces + seccomp + rlimits): the escapes that got past the
audit-hook design now hold, with and without the hook, and the host stays unharmed.

After every sandboxed attack the host is checked: canary files under the host's ``/tmp`` (content and
mode) and the modes of ``/tmp`` and ``/dev/shm`` are unchanged; nothing the attack tried to create (every
such name carries the test's token) appeared in ``/tmp`` or ``/dev/shm``; the host side's own temporary
files (Python's ``tempfile``, pointed at a private directory for the test) do not exist at all; no process
of the run is left; the loopback listeners the test runs (TCP on 127.0.0.1 and an abstract Unix socket)
accepted no connection. Other entries that appear in ``/tmp`` meanwhile are not attributed to the attack:
this suite runs beside other tests and programs that use ``/tmp``.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from dodai.tools import osbox
from dodai.tools.base import ToolError
from dodai.tools.python_sandbox import _remove_tree, python_tool, run_python
from dodai.tools.redteam import SANDBOX_ESCAPES, _fill

MEMORY_MB, DISK_MB = 128, 64


@pytest.fixture(scope="module")
def sandbox():
    try:
        return osbox.find_sandbox()
    except osbox.SandboxUnavailable as e:
        pytest.skip(str(e))


class Host:
    """The host-side witnesses of one test."""

    def __init__(self):
        self.token = secrets.token_hex(6)
        self.canary = f"/tmp/canary-{self.token}.txt"
        with open(self.canary, "w") as f:
            f.write("the canary is alive\n")
        os.chmod(self.canary, 0o644)
        self.canary_dir = f"/tmp/canary-{self.token}.d"
        os.mkdir(self.canary_dir, 0o755)
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.setblocking(False)
        self.abstract = f"dodai-test-{self.token}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind("\0" + self.abstract)
        self.unix.listen(8)
        self.unix.setblocking(False)
        self.before = self.state()

    def subs(self) -> dict:
        return {"token": self.token, "host_pid": str(os.getpid()), "port": str(self.tcp.getsockname()[1]),
                "abstract": self.abstract, "canary": self.canary, "hostname": os.uname().nodename,
                "limit_mb": str(MEMORY_MB + DISK_MB)}

    def state(self) -> dict:
        with open(self.canary, "rb") as f:
            canary = f.read()
        return {"canary": canary, "canary_mode": os.lstat(self.canary).st_mode,
                "canary_dir_mode": os.lstat(self.canary_dir).st_mode, "tmp_mode": os.lstat("/tmp").st_mode,
                "shm_mode": os.lstat("/dev/shm").st_mode if os.path.exists("/dev/shm") else None,
                "tmp": set(os.listdir("/tmp")),
                "shm": set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()}

    def check(self, run_id: str = "") -> None:
        now = self.state()
        for k in ("canary", "canary_mode", "canary_dir_mode", "tmp_mode", "shm_mode"):
            assert now[k] == self.before[k], f"host {k} changed"
        for where in ("tmp", "shm"):
            new = now[where] - self.before[where]
            ours = [n for n in new if self.token in n]
            assert not ours, f"new entries in host /{where}: {ours}"
        for lst in (self.tcp, self.unix):
            with pytest.raises(BlockingIOError):
                conn, _ = lst.accept()
                conn.close()
        if run_id:
            assert not _processes_with(f"dodai-sandbox-run-{run_id}"), "a process of the run is still alive"

    def close(self):
        self.tcp.close()
        self.unix.close()
        for p in (self.canary, f"/tmp/dodai-attack-{self.token}", f"/dev/shm/dodai-attack-{self.token}"):
            if os.path.lexists(p):
                os.unlink(p)
        os.rmdir(self.canary_dir)


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.fixture
def fast_tmp(tmp_path):
    """A private directory on a tmpfs when there is one (deep trees cost milliseconds per rmdir on a busy
    disk), else ``tmp_path``."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    d = tempfile.mkdtemp(prefix="test-fast-", dir="/dev/shm")
    yield __import__("pathlib").Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host():
    h = Host()
    yield h
    h.close()


# ---- the escapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("esc", SANDBOX_ESCAPES, ids=lambda e: e.name)
def test_escape_holds_in_the_sandbox(sandbox, host, esc, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code = _fill(esc.code, host.subs())
    for hook in (True, False):  # production (the attack switches the hook off itself), and no hook at all
        r = run_python(code, 3.0, MEMORY_MB, disk_mb=DISK_MB, audit_hook=hook)
        assert r.sandboxed and not r.timed_out, r.output
        assert "ESCAPED" not in r.output, r.output
        assert "Traceback" not in r.output, r.output  # the attack ran to its end: each step was refused
        host.check(r.run_id)
        assert os.listdir(tmp_path) == []
        if esc.name == "symlinks_for_host_cleanup":
            assert r.output.strip() == "planted"
        if esc.name == "deep_directory_tree":
            assert r.output.strip() == "depth 1500"
        if esc.name == "memfd_and_shm_beyond_limits":
            held, written = (int(x) for x in r.output.split("held MB ")[1].split(" written MB "))
            assert held == 0 and 0 < written <= DISK_MB  # no memfd; the work dir's tmpfs is full at disk_mb


@pytest.mark.skipif(os.geteuid() != 0, reason="the old design's escapes are demonstrated as root (no uid drop)")
@pytest.mark.parametrize("esc", [e for e in SANDBOX_ESCAPES if e.old_design], ids=lambda e: e.name)
def test_escape_gets_through_the_audit_hook_design(host, esc, tmp_path, monkeypatch):
    """The same programs without the OS sandbox (audit hook and rlimits; root without the uid drop) do
    escape — so each is a real attack, stopped by the sandbox and not by accident."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    r = run_python(_fill(esc.code, host.subs()), 5.0, MEMORY_MB, unsafe_no_sandbox=True, drop_privileges=False)
    assert not r.sandboxed and "ESCAPED" in r.output, r.output
    if "socket" in esc.name:  # the connections did reach the host's listeners
        for lst in (host.tcp, host.unix):
            conn, _ = lst.accept()
            conn.close()
    with open(host.canary, "w") as f:  # one of them appends to it; give the next check a clean witness
        f.write("the canary is alive\n")
    assert os.listdir(tmp_path) == []  # the host temp dir was removed


# ---- what the child sees, what the filter refuses ---------------------------------------------------------
def test_the_child_sees_only_the_sandbox(sandbox):
    code = ("import os, sys\nprint(os.getcwd(), os.getuid(), os.getgid(), os.uname().nodename, os.getpid())\n"
            "print(sorted(os.listdir('/')))\nprint(dict(os.environ))\nprint(os.urandom(4).hex())")
    r = run_python(code, 3.0, MEMORY_MB, audit_hook=False)
    first, root, env, rand = r.output.strip().splitlines()
    assert first.split() == [osbox.WORKDIR, "65534", "65534", "sandbox", "2"]  # pid 2: bwrap's reaper is 1
    top = set(eval(root))  # noqa: S307 - our own child's printed list
    assert top.isdisjoint({"etc", "home", "proc", "sys", "dev", "tmp", "var", "run", "mnt", "opt", "srv", "boot"})
    assert osbox.WORKDIR.strip("/") in top
    assert env == "{'TMPDIR': '" + osbox.WORKDIR + "'}"
    assert len(rand) == 8  # randomness without /dev/urandom (getrandom)


def test_site_packages_project_and_home_are_hidden(sandbox):
    """What is visible of the venv's site-packages, the project, the home dir and a masked site-packages is
    only the path down to what the interpreter needs (bwrap creates those parent directories)."""
    venv_site = next(p for p in sys.path if p.endswith("site-packages"))
    checks = [venv_site, os.getcwd(), os.path.expanduser("~"), *sandbox.masks]
    code = (f"import os, json\nprint(json.dumps([sorted(os.listdir(p)) if os.path.isdir(p) else None "
            f"for p in {checks!r}]))")
    r = run_python(code, 3.0, MEMORY_MB, audit_hook=False)
    for p, seen in zip(checks, json.loads(r.output)):
        needed = {q[len(p) + 1:].split("/")[0] for q in sandbox.ro_paths if q.startswith(p + "/")}
        assert seen is None or set(seen) <= needed, (p, seen)
    assert json.loads(r.output)[len(checks) - len(sandbox.masks):] == [[]] * len(sandbox.masks)


SECCOMP_PROBE = r'''
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = NUMBERS
def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr[name]), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()
out = {}
out["socket_inet"] = call("socket", 2, 1, 0)
out["socket_inet6"] = call("socket", 10, 1, 0)
out["socket_netlink"] = call("socket", 16, 3, 0)
out["socket_packet"] = call("socket", 17, 3, 0)
out["ptrace_traceme"] = call("ptrace", 0, 0, 0, 0)
out["keyctl"] = call("keyctl", 0, -3, 0)
out["bpf"] = call("bpf", 0, 0, 0)
out["userfaultfd"] = call("userfaultfd", 0)
out["perf_event_open"] = call("perf_event_open", 0, 0, -1, -1, 0)
out["io_uring_setup"] = call("io_uring_setup", 1, 0)
out["unshare_user"] = call("unshare", 0x10000000)
out["mount"] = call("mount", 0, 0, 0, 0, 0)
out["memfd_create"] = call("memfd_create", 0, 0)
out["shmget"] = call("shmget", 0, 4096, 0o600)
out["clone"] = call("clone", 17, 0, 0, 0, 0)
out["clone3"] = call("clone3", 0, 0)
out["kexec_load"] = call("kexec_load", 0, 0, 0, 0)
out["setns"] = call("setns", 0, 0)
out["process_vm_readv"] = call("process_vm_readv", 1, 0, 0, 0, 0, 0)
if platform.machine() == "x86_64":
    out["x32_getpid"] = (libc.syscall(ctypes.c_long(0x40000000 + 39)), ctypes.get_errno())
out["socket_unix"] = call("socket", 1, 1, 0)
out["getpid"] = (os.getpid(), 0)
print(out)
'''


def test_seccomp_filter_refuses_the_dangerous_calls(sandbox):
    if sandbox.seccomp is None:
        pytest.skip(f"no seccomp table for {platform.machine()}")
    table = osbox._ARCHES[osbox._ARCH_ALIASES.get(platform.machine(), platform.machine())][1]
    numbers = {n: table[n] for n in ("socket", "ptrace", "keyctl", "bpf", "userfaultfd", "perf_event_open",
                                     "io_uring_setup", "unshare", "mount", "memfd_create", "shmget", "clone",
                                     "clone3", "kexec_load", "setns", "process_vm_readv")}
    r = run_python(SECCOMP_PROBE.replace("NUMBERS", repr(numbers)), 3.0, MEMORY_MB, audit_hook=False)
    out = eval(r.output.strip().splitlines()[-1])  # noqa: S307 - our own child's printed dict
    allowed = {"socket_unix", "getpid"}
    for name, (ret, err) in out.items():
        if name in allowed:
            assert ret >= 0, (name, ret, err)
        else:
            assert (ret, err) == (-1, 1), f"{name}: returned {ret}, errno {err} (want EPERM from the filter)"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the 32-bit int 0x80 entry exists on x86-64 only")
def test_foreign_architecture_kills_the_process(sandbox):
    """``int 0x80`` (the i386 system-call entry, a classic way around filters that check numbers only) from
    an executable page: the filter checks the architecture first and kills the process (SIGSYS)."""
    code = ("import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "buf.write(b'\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3')  # mov eax, 20 (getpid); int 0x80; ret\n"
            "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\n"
            "print('returned', f())")
    r = run_python(code, 3.0, MEMORY_MB, audit_hook=False)
    assert r.signal == signal.SIGSYS and "returned" not in r.output, (r.returncode, r.output)
    with pytest.raises(ToolError, match="forbidden system call"):
        from dodai.tools.python_sandbox import _format

        _format(r, 3.0, MEMORY_MB)


def test_seccomp_program_layout():
    prog = osbox.seccomp_program("x86_64")
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    first = [int.from_bytes(prog[i:i + 8][4:], "little") for i in range(0, 16, 8)]
    assert first == [4, 0xC000003E]  # load the arch, compare with AUDIT_ARCH_X86_64 before anything else
    assert osbox.seccomp_program("aarch64")[12:16] == (0xC00000B7).to_bytes(4, "little")
    assert osbox.seccomp_program("riscv64") is None


# ---- work dir: private, fresh, bounded ---------------------------------------------------------------------
def test_work_dir_is_private_fresh_and_bounded(sandbox, host):
    first = run_python("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd(), os.listdir('.'))", 3.0, 128)
    second = run_python("import os\nprint(os.getcwd(), os.listdir('.'))", 3.0, 128)
    assert first.output.split() == [osbox.WORKDIR, "['left.txt']"] and second.output.split() == [osbox.WORKDIR, "[]"]
    if sandbox.sized_tmpfs:
        code = ("n = 0\ntry:\n    for i in range(100):\n        with open(f'f{i}', 'wb') as f:\n"
                "            for _ in range(4):\n                f.write(b'x' * 2**20)\n                n += 1\n"
                "except OSError as e:\n    print(e.strerror)\nprint(n)")
        r = run_python(code, 3.0, 128, disk_mb=5, audit_hook=False)
        assert r.output.split("\n")[0] == "No space left on device" and int(r.output.split()[-1]) <= 5, r.output
    host.check(second.run_id)


# ---- refusing to run without a sandbox ----------------------------------------------------------------------
def test_refuses_without_bwrap():
    tool = python_tool(2.0, 128, bwrap="/nonexistent/bwrap")
    with pytest.raises(osbox.SandboxUnavailable) as e:
        tool.call({"code": "print(1)"})
    msg = str(e.value)
    assert isinstance(e.value, ToolError) and "\n" not in msg
    assert "apt-get install bubblewrap" in msg and "--unsafe-no-sandbox" in msg and "not an executable" in msg
    unsafe = python_tool(2.0, 128, bwrap="/nonexistent/bwrap", unsafe_no_sandbox=True)
    assert unsafe.call({"code": "print(6 * 7)"}) == "42"


def test_refuses_when_bwrap_cannot_create_namespaces(tmp_path):
    fake = tmp_path / "bwrap"
    help_text = "\\n".join(f"    {opt}    x" for opt in (*osbox.REQUIRED, "--size"))
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --help ]; then printf '" + help_text + "\\n'; exit 0; fi\n"
                    "echo 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(osbox.SandboxUnavailable, match="No permissions to creating new namespace") as e:
        run_python("print(1)", 2.0, 128, bwrap=str(fake))
    assert "apt-get install bubblewrap" in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_and_opts_in(monkeypatch, capsys):
    from dodai.cli import main

    monkeypatch.setattr(osbox, "DEFAULT_BWRAP", "/nonexistent/bwrap")
    monkeypatch.setenv("PATH", "/nonexistent")
    args = ["tool", "run", "python", "--timeout", "3", "--args", '{"code": "print(6 * 7)"}']
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install bubblewrap" in err and "--unsafe-no-sandbox" in err
    assert main([*args, "--unsafe-no-sandbox"]) == 0
    assert capsys.readouterr().out.strip() == "42"
    assert main(["agent", "What is 6 * 7?", "--tools", "calculator,python"]) == 2  # before any model loads
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install bubblewrap" in err


# ---- the host uid drop (host root, interpreter readable by anyone) ----------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="the host uid drop happens only when the host runs as root")
def test_host_uid_drop_with_a_world_readable_interpreter(sandbox):
    system = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
    if system is None:
        pytest.skip("no system python3 to run the sandbox with")
    sb = osbox.find_sandbox(python=system)
    if not sb.host_uid_drop:
        pytest.skip(f"{system} is not readable by every user, or unprivileged user namespaces are off")
    code = "import time\nprint('ok', flush=True)\ntime.sleep(5)"
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_python(code, 1.5, 128, python=system)))
    t.start()
    uids = set()  # host uids of the bwrap processes running this interpreter (only this test uses it)
    while t.is_alive():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                if argv[0] == sb.bwrap.encode() and sb.python.encode() in argv:
                    uids.add(os.stat(f"/proc/{pid}").st_uid)
            except OSError:
                pass
    t.join()
    assert result["r"].output.startswith("ok") and result["r"].timed_out
    assert uids and all(20000 <= uid < 60000 for uid in uids), uids  # bwrap ran as a fresh unprivileged uid


# ---- the host-side cleanup left for the unsafe mode ---------------------------------------------------------
def _hostile_tree(root, target_dir, target_file, depth):
    """Links to the targets (relative, so they resolve even where an ancestor is closed to their owner) in
    unreadable and unwritable directories, a fifo, a link to ``/``, and a chain ``depth`` directories deep."""
    def link(target, where):
        os.symlink(os.path.relpath(target, os.path.dirname(os.path.abspath(where))), where)

    os.mkdir(root)
    link(target_dir, os.path.join(root, "ln_dir"))
    link(target_file, os.path.join(root, "ln_file"))
    os.symlink("/", os.path.join(root, "ln_root"))
    locked = os.path.join(root, "locked")
    os.mkdir(locked)
    link(target_dir, os.path.join(locked, "ln_dir"))
    os.mkdir(os.path.join(locked, "inner"))
    os.chmod(os.path.join(locked, "inner"), 0)
    os.chmod(locked, 0)
    ro = os.path.join(root, "readonly")
    os.mkdir(ro)
    link(target_file, os.path.join(ro, "ln_file"))
    link(target_dir, os.path.join(ro, "ln_dir"))
    os.chmod(ro, 0o500)
    os.mkfifo(os.path.join(root, "fifo"))
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


def test_remove_tree_never_follows_and_handles_any_depth(fast_tmp):
    tmp_path = fast_tmp
    target_dir, target_file = tmp_path / "target", tmp_path / "target.txt"
    target_dir.mkdir(mode=0o755)
    (target_dir / "keep").write_text("keep")
    target_file.write_text("keep")
    target_file.chmod(0o644)
    before = [(p.lstat().st_mode, p.read_text() if p.is_file() else None)
              for p in (target_dir, target_dir / "keep", target_file)]
    old = str(tmp_path / "old")
    _hostile_tree(old, str(target_dir), str(target_file), 1200)
    if sys.version_info < (3, 12):  # what the old design's (recursive) cleanup does with it
        scope: dict = {"os": os}
        exec(OLD_RMTREE, scope)  # noqa: S102 - this project's own former code
        with pytest.raises(RecursionError):
            scope["_old_rmtree"](old)
    new = str(tmp_path / "new")
    _hostile_tree(new, str(target_dir), str(target_file), 1200)
    os.chmod(new, 0o500)
    for tree in (old, new):
        _remove_tree(tree)
        assert not os.path.lexists(tree)
    after = [(p.lstat().st_mode, p.read_text() if p.is_file() else None)
             for p in (target_dir, target_dir / "keep", target_file)]
    assert after == before and stat.S_IMODE(os.lstat("/tmp").st_mode) == 0o1777


def test_unsafe_mode_removes_a_hostile_work_dir(fast_tmp, monkeypatch, host):
    tmp_path = fast_tmp
    os.chmod(tmp_path, 0o755)  # the child, an unprivileged uid, must reach its temp dir
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    for esc in SANDBOX_ESCAPES:
        if esc.name in ("symlinks_for_host_cleanup", "deep_directory_tree"):
            r = run_python(_fill(esc.code, host.subs()), 5.0, 128, unsafe_no_sandbox=True)
            assert r.output.strip() in ("planted", "depth 1500"), r.output
            assert os.listdir(tmp_path) == []
    host.check()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the cleanup as another, unprivileged user")
def test_remove_tree_as_the_unprivileged_owner(tmp_path):
    """Without root's permission bypass (a non-root user running the unsafe mode): unreadable and
    unwritable directories are fixed through their own descriptors, and targets owned by the same user —
    which a chmod through a link would change, and the old design's cleanup does change — keep their
    modes."""
    import inspect

    from dodai.tools import python_sandbox

    python = next((p for p in (sys.executable, "/usr/bin/python3")
                   if osbox._world_readable(os.path.realpath(p))), None)
    if python is None:
        pytest.skip("no interpreter an unprivileged user can run")
    uid = 47000 + secrets.randbelow(1000)
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, uid, uid)
    source = "\n".join(inspect.getsource(f) for f in (python_sandbox._open_dir, python_sandbox._remove_tree,
                                                       _hostile_tree))
    driver = ("import os, stat\n" + source + "\n"
              "os.mkdir('target', 0o755)\nopen('target.txt', 'w').close()\nos.chmod('target.txt', 0o644)\n"
              "here = os.getcwd()\n_hostile_tree('tree', here + '/target', here + '/target.txt', 300)\n"
              "os.chmod('tree', 0o500)\n_remove_tree('tree')\n"
              "print(os.path.lexists('tree'), oct(os.stat('target').st_mode & 0o7777),"
              " oct(os.stat('target.txt').st_mode & 0o7777), os.getuid())")
    r = subprocess.run([python, "-I", "-S", "-c", driver], cwd=work, user=uid, group=uid, extra_groups=[],
                       env={}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "0o755", "0o644", str(uid)]
    # The old design's cleanup (rmtree; on an error chmod 0o700 of the path and its parent, by path) on the
    # same tree crashes and leaves it behind; on a link inside an unwritable directory it chmods the target.
    old = ("import os\n" + OLD_RMTREE + _hostile_tree_source() +
           "here = os.getcwd()\nos.mkdir('target', 0o755)\n"
           "_hostile_tree('tree', here + '/target', here + '/target', 5)\n"
           "try:\n    _old_rmtree('tree')\nexcept Exception as e:\n    print('crashed', type(e).__name__)\n"
           "print('left', os.path.lexists('tree'))\n"
           "os.mkdir('simple')\nos.mkdir('simple/ro')\nos.symlink('../../target', 'simple/ro/ln')\n"
           "os.chmod('simple/ro', 0o500)\n_old_rmtree('simple')\n"
           "print('target', oct(os.stat('target').st_mode & 0o7777))")
    (tmp_path / "old").mkdir()
    os.chown(tmp_path / "old", uid, uid)
    r = subprocess.run([python, "-I", "-S", "-c", old], cwd=tmp_path / "old", user=uid, group=uid,
                       extra_groups=[], env={}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["crashed", "TypeError", "left", "True", "target", "0o700"], r.stdout


def _hostile_tree_source() -> str:
    import inspect

    return inspect.getsource(_hostile_tree) + "\n"


# The host-side cleanup of the audit-hook design (dodai/tools/python_sandbox.py before the OS sandbox), kept
# here only to show the regression tests above fail on it.
OLD_RMTREE = """
import shutil
def _old_rmtree(path):
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)
"""
