"""A ``python`` tool: run model-written code in a separate, resource-limited, audited process.

What one call does (:func:`run_python`):

1. makes a fresh temporary directory (the child's cwd; deleted afterwards, whatever the child left);
2. starts ``python -I -S -B -u -c BOOTSTRAP`` — isolated mode (no ``PYTHON*`` variables, no user site,
   no script directory on ``sys.path``), no ``site`` (no third-party packages: stdlib only), no
   bytecode writes, unbuffered output — with an **empty environment**, stdin from ``/dev/null``,
   stdout+stderr into one pipe, in a **new session** (its own process group);
3. the bootstrap, before it runs a line of user code: compiles the code; pre-imports a set of useful
   stdlib modules (:data:`PREIMPORT`); sets POSIX rlimits — ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS``
   (address space, ``memory_mb``), ``RLIMIT_FSIZE`` (largest file written), ``RLIMIT_NOFILE`` (open
   files; the hook also refuses more than :data:`MAX_WRITE_OPENS` opens for writing, so disk use stays
   under ``MAX_WRITE_OPENS × FILE_SIZE_MB``), ``RLIMIT_NPROC`` = 1 (no new processes *or threads*) and
   ``RLIMIT_CORE`` = 0, soft = hard so they cannot be raised again; **when the host runs as root** it
   drops to a fresh unprivileged uid/gid (random in 20000–59999, no supplementary groups), which owns
   only the temp dir — so the OS itself refuses writes anywhere else and signals to other processes, and
   RLIMIT_NPROC is enforced (the kernel does not enforce it for root); then it installs a
   ``sys.addaudithook`` hook (PEP 578) that raises ``PermissionError("... blocked by the sandbox")``
   for: process creation (``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.spawn*``, ``os.fork``,
   ``os.forkpty``, ``subprocess.Popen``), signals (``os.kill``, ``os.killpg``), every ``socket.*`` and
   ``ctypes.*`` event, importing :data:`BLOCKED_MODULES` (``socket``, ``ctypes``, ``_posixsubprocess``,
   ``multiprocessing`` …), ``resource.setrlimit``, opening any path outside the temp dir (reading is
   allowed only inside it and in the stdlib directories, for imports; paths are resolved with
   ``realpath``, so symlinks and ``..`` do not escape), and listing, creating, removing, renaming,
   linking, chmod/chown-ing or ``chdir``-ing outside it. ``importlib.import_module`` skips the C-level
   ``import`` event, so the blocked names are also refused by a first meta-path finder and poisoned in
   ``sys.modules``; ``pidfd_open``/``pidfd_send_signal``, which raise no audit event, are deleted;
4. the host reads the output with a **wall-clock timeout** and an output-size cap, and kills the whole
   process group (``SIGKILL``) on either; the result is the *tail* of stdout+stderr. The timeout (and
   the CPU allowance) start when the bootstrap signals, through a one-byte pipe, that the user code
   starts — start-up on a busy machine has its own bound (:data:`STARTUP_S`) and does not eat the
   program's time.

What this guarantees, and what it does not:

- The **real limits are the separate process, the rlimits, the wall timeout and (as root) the
  unprivileged uid**: CPU, memory, file size, open files, process/thread count and wall time are
  bounded by the kernel and the host whatever the code does, and as root the OS refuses writes outside
  the temp dir. Without root (no uid drop), file-system protection is only the audit hook and the
  user's own permissions.
- **The audit hook is not a security boundary** against a determined attacker in-process: PEP 578
  says so itself. Code that finds a memory-corruption bug in CPython, or an un-audited primitive
  (e.g. a C extension that opens files without raising ``open``), can bypass it; there is a check-then-
  open race on symlinks (mitigated because no second thread can start). It stops the obvious attacks
  a model might write — ``os.system``, ``open('/etc/passwd')``, sockets, ``ctypes`` — with a clear
  message, and the tests in ``tests/test_tools_python.py`` check each one.
- There is **no network namespace, seccomp filter, chroot or container**: the process can still
  make any system call not covered above (e.g. ``os.stat`` on host paths, reading ``/proc`` through an
  un-audited route). For untrusted code from the internet, run this inside a container/VM as well.
- Threads are impossible (RLIMIT_NPROC = 1) and only stdlib modules are importable; as root, only the
  pre-imported modules (the stdlib usually lives under a directory the dropped uid cannot read).
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from dodai.tools.base import Tool, ToolError

MAX_CODE_CHARS = 100_000
MAX_OUTPUT_BYTES = 1_000_000  # kill the child once it has written this much (enormous-output attacks)
TAIL_CHARS = 2000  # what comes back to the model: the last characters of the output
FILE_SIZE_MB = 8  # RLIMIT_FSIZE: largest file the child may write
OPEN_FILES = 64  # RLIMIT_NOFILE
MAX_WRITE_OPENS = 64  # the hook refuses more opens for writing: disk use ≤ MAX_WRITE_OPENS × FILE_SIZE_MB
MARKER = "blocked by the sandbox"
STARTUP_S = 20.0  # the most the interpreter start-up and pre-imports may take (a busy machine is slow)

PREIMPORT = ("math", "cmath", "json", "re", "string", "random", "collections", "collections.abc", "itertools",
             "functools", "operator", "statistics", "fractions", "decimal", "datetime", "time", "heapq", "bisect",
             "textwrap", "copy", "pprint", "dataclasses", "typing", "enum", "array", "struct", "hashlib", "base64",
             "binascii", "unicodedata", "calendar", "io", "csv", "zlib", "difflib", "traceback", "linecache",
             "tempfile", "pathlib", "glob", "fnmatch", "shutil", "numbers", "contextlib", "abc", "keyword",
             "locale", "warnings", "weakref", "html", "ast", "threading", "queue", "secrets")
# Refused by name (a dotted name is refused when it or any parent package is listed): process creation,
# networking, foreign-function and interpreter-internals modules.
BLOCKED_MODULES = ("socket", "_socket", "ssl", "_ssl", "select", "selectors", "subprocess", "_posixsubprocess",
                   "multiprocessing", "_multiprocessing", "concurrent", "asyncio", "pty", "ctypes", "_ctypes",
                   "_ctypes_test", "urllib.request", "http.client", "http.server", "ftplib", "smtplib", "poplib",
                   "imaplib", "telnetlib", "socketserver", "xmlrpc", "webbrowser", "_xxsubinterpreters",
                   "_xxinterpchannels", "_testcapi", "_testinternalcapi", "_testmultiphase", "_testbuffer",
                   "faulthandler", "resource", "termios", "fcntl", "_posixshmem", "mmap")

# The child's bootstrap (run with -c). argv: code file, sandbox dir, uid (-1 = keep), CPU s, AS bytes,
# FSIZE bytes, NOFILE, ready-pipe fd. Stdlib only; the user code runs in a fresh globals dict.
BOOTSTRAP = r'''
import sys, os, resource, builtins
_code_path, _root = sys.argv[1], sys.argv[2]
_uid, _cpu, _mem, _fsize, _nofile, _ready = map(int, sys.argv[3:9])
with open(_code_path, encoding="utf-8") as f:
    _src = f.read()
os.remove(_code_path)
import linecache
linecache.cache["<code>"] = (len(_src), None, _src.splitlines(True), "<code>")
try:
    _code = compile(_src, "<code>", "exec")
except SyntaxError:
    import traceback
    traceback.print_exc(limit=0)
    sys.exit(1)
for _m in PREIMPORT:
    try:
        __import__(_m)
    except Exception:
        pass
os.environ.clear()
os.environ["TMPDIR"] = _root
import tempfile
tempfile.tempdir = _root
_read_roots = tuple(sorted({os.path.realpath(p if os.path.isdir(p) else os.path.dirname(p)) for p in sys.path
                            if p}))
# RLIMIT_CPU counts the CPU already spent (start-up, pre-imports): the user code gets _cpu seconds on top.
_cpu = int(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) + _cpu + 0.999)
for _lim, _val in ((resource.RLIMIT_CPU, _cpu), (resource.RLIMIT_AS, _mem), (resource.RLIMIT_FSIZE, _fsize),
                   (resource.RLIMIT_NOFILE, _nofile), (resource.RLIMIT_NPROC, 1), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_lim, (_val, _val))
if _uid >= 0:
    try:
        os.setgroups([])
        os.setgid(_uid)
        os.setuid(_uid)
    except OSError:  # e.g. root without CAP_SETUID in a container: refuse to run rather than run as root
        sys.stderr.write("dodai-sandbox: cannot drop privileges\n")
        sys.exit(97)
    if os.getuid() != _uid or os.geteuid() != _uid or os.getgid() != _uid:
        sys.stderr.write("dodai-sandbox: cannot drop privileges\n")
        sys.exit(97)

def _install(root, read_roots, blocked_modules, marker, max_write_opens):
    write_opens = [0]
    realpath, join, getcwd, fsdecode = os.path.realpath, os.path.join, os.getcwd, os.fsdecode
    O_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    ALWAYS = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                        "subprocess.Popen", "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit",
                        "os.startfile", "sys.setrecursionlimit_unsafe", "os.add_dll_directory",
                        "_posixsubprocess.fork_exec"})
    PATHS = {"os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "os.mkdir": (0,), "os.remove": (0,),
             "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (0, 1),
             "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.chflags": (0,), "os.utime": (0,),
             "os.setxattr": (0,), "os.getxattr": (0,), "os.listxattr": (0,), "os.removexattr": (0,),
             "os.mkfifo": (0,), "os.mknod": (0,), "glob.glob": (0,), "glob.glob/2": (0,),
             "shutil.copyfile": (0, 1), "shutil.copymode": (0, 1), "shutil.copystat": (0, 1),
             "shutil.copytree": (0, 1), "shutil.chown": (0,), "shutil.move": (0, 1), "shutil.rmtree": (0,),
             "shutil.make_archive": (0, 2), "shutil.unpack_archive": (0, 1), "os.walk": (0,), "os.fwalk": (0,),
             "sqlite3.connect": (0,)}
    READ_OK = {"os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob", "glob.glob/2"}
    root_sep = root + os.sep

    def is_blocked(name):
        parts = str(name).split(".")
        return any(".".join(parts[:i]) in blocked_modules for i in range(1, len(parts) + 1))

    def inside(p, roots):
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def resolve(p):
        if p is None:
            p = "."
        if isinstance(p, int):
            return None
        p = fsdecode(p)
        return realpath(join(getcwd(), p))

    def deny(event, what=""):
        raise PermissionError(f"{event}{' ' + what if what else ''} {marker}")

    def check_path(event, p, write):
        rp = resolve(p)
        if rp is None:
            return
        if rp == root or rp.startswith(root_sep):
            return
        if not write and (inside(rp, read_roots) or rp in ("/dev/null", "/dev/urandom", "/dev/random")):
            return
        deny(event, repr(fsdecode(p)) if not isinstance(p, int) else "")

    def hook(event, args):
        if event in ALWAYS or event.startswith(("socket.", "ctypes.", "sys.remote_exec")):
            deny(event)
        if event == "import":
            if is_blocked(args[0]):
                deny("import", repr(args[0]))
        elif event == "open":
            path, mode, flags = args
            write = bool(mode) and any(c in mode for c in "wax+") or bool((flags or 0) & O_WRITE)
            check_path(event, path, write)
            if write and not isinstance(path, int):
                write_opens[0] += 1
                if write_opens[0] > max_write_opens:
                    deny(event, f"(more than {max_write_opens} files opened for writing)")
        elif event in PATHS:
            for i in PATHS[event]:
                if i < len(args) and args[i] is not None:
                    check_path(event, args[i], event not in READ_OK)

    def guarded(event, args):
        try:
            hook(event, args)
        except PermissionError:
            raise
        except Exception as e:  # fail closed: an event we cannot check is refused
            raise PermissionError(f"{event} {marker} (could not check: {type(e).__name__})") from None

    sys.addaudithook(guarded)

    # importlib.import_module() reaches the finders without the C-level "import" audit event, so the
    # same names are also refused by a first meta-path finder and poisoned in sys.modules.
    class _Refuse:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if is_blocked(name):
                deny("import", repr(name))
            return None

    sys.meta_path.insert(0, _Refuse)
    for name in blocked_modules:
        if name not in sys.modules:
            sys.modules[name] = None

_install(os.path.realpath(_root), _read_roots, frozenset(BLOCKED_MODULES), MARKER, MAX_WRITE_OPENS)
# Signals through a pidfd raise no audit event: take the functions away (hardening, not a boundary).
import posix, _signal
for _mod in (os, posix, _signal):
    for _name in ("pidfd_open", "pidfd_send_signal"):
        if hasattr(_mod, _name):
            delattr(_mod, _name)
_g = {"__name__": "__main__", "__builtins__": builtins}
del _install, _read_roots, _lim, _val, _m, f, _mod, _name
os.write(_ready, b"1")  # tell the host the user code starts now: its wall-clock timeout starts here
os.close(_ready)
try:
    exec(_code, _g)
except SystemExit:
    raise
except BaseException:
    import traceback
    _t, _v, _tb = sys.exc_info()
    _frames = [fr for fr in traceback.extract_tb(_tb) if fr.filename != "<string>"]  # not the sandbox's own
    sys.stderr.write("Traceback (most recent call last):\n" + "".join(traceback.format_list(_frames))
                     + "".join(traceback.format_exception_only(_t, _v)))
    sys.exit(1)
'''


def _bootstrap_source() -> str:
    return (f"PREIMPORT = {PREIMPORT!r}\nBLOCKED_MODULES = {BLOCKED_MODULES!r}\nMARKER = {MARKER!r}\n"
            f"MAX_WRITE_OPENS = {MAX_WRITE_OPENS!r}\n" + BOOTSTRAP)


@dataclass
class RunResult:
    output: str  # the tail of stdout+stderr (decoded, replacement characters for bad UTF-8)
    returncode: int | None  # the child's exit status (negative: killed by that signal)
    seconds: float
    timed_out: bool = False
    output_limited: bool = False
    total_bytes: int = 0


def _rmtree(path: str) -> None:
    """Delete the sandbox dir even if the child chmod-ed things unreadable."""
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)
    if os.path.exists(path):  # one more pass, in case a subdir needed fixing first
        shutil.rmtree(path, ignore_errors=True)


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 256, *, drop_privileges: bool | None = None,
               max_output_bytes: int = MAX_OUTPUT_BYTES, tail_chars: int = TAIL_CHARS,
               audit_hook: bool = True) -> RunResult:
    """Run ``code`` in the sandbox described in the module docstring; never raises for what the code does.

    ``drop_privileges`` defaults to "when running as root". ``audit_hook=False`` leaves the hook out —
    only for tests that check the kernel limits hold on their own.
    """
    if drop_privileges is None:
        drop_privileges = hasattr(os, "geteuid") and os.geteuid() == 0
    uid = 20000 + secrets.randbelow(40000) if drop_privileges else -1
    cpu = max(1, int(-(-timeout_s // 1)))  # whole seconds, rounded up
    tmp = tempfile.mkdtemp(prefix="dodai-py-")
    t0 = time.perf_counter()
    try:
        code_path = os.path.join(tmp, ".code.py")
        with open(code_path, "w", encoding="utf-8") as f:
            f.write(code)
        if uid >= 0:
            os.chown(tmp, uid, uid)
        boot = _bootstrap_source()
        if not audit_hook:
            boot = boot.replace("\n_install(os.path.realpath", "\n(lambda *a: None)(os.path.realpath")
        ready_r, ready_w = os.pipe()  # the child writes one byte here when the user code starts
        argv = [sys.executable, "-I", "-S", "-B", "-u", "-c", boot, code_path, tmp, str(uid), str(cpu),
                str(memory_mb * 2**20), str(FILE_SIZE_MB * 2**20), str(OPEN_FILES), str(ready_w)]
        try:
            proc = subprocess.Popen(argv, cwd=tmp, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        buf, total, timed_out, limited = bytearray(), 0, False, False
        keep = tail_chars * 4 + 16  # bytes: enough for tail_chars UTF-8 characters
        # The wall-clock timeout covers the user code; start-up has its own, generous bound.
        deadline = t0 + STARTUP_S
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                sel.register(ready_r, selectors.EVENT_READ)
                while True:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        timed_out = True
                        break
                    events = sel.select(left)
                    if any(key.fd == ready_r for key, _ in events):
                        if os.read(ready_r, 1) == b"1":
                            deadline = time.perf_counter() + timeout_s + 0.2
                        sel.unregister(ready_r)  # ready, or the child died during start-up
                    if not any(key.fileobj is proc.stdout for key, _ in events):
                        continue
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    total += len(chunk)
                    buf += chunk
                    if len(buf) > 2 * keep:
                        del buf[:-keep]
                    if total > max_output_bytes:
                        limited = True
                        break
            if not (timed_out or limited):
                try:
                    proc.wait(max(0.0, deadline - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):  # the group, and the child
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            proc.wait()
            proc.stdout.close()
            os.close(ready_r)
        text = bytes(buf[-keep:]).decode("utf-8", errors="replace")
        if len(text) > tail_chars or total > len(buf):
            text = f"… [{total} bytes of output; the last {min(len(text), tail_chars)} characters]\n" \
                   + text[-tail_chars:]
        return RunResult(text, proc.returncode, time.perf_counter() - t0, timed_out, limited, total)
    finally:
        _rmtree(tmp)


_SIGNALS = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed", signal.SIGXFSZ: "file size limit",
            signal.SIGSEGV: "segmentation fault (stack overflow?)", signal.SIGABRT: "aborted"}


def _format(r: RunResult, timeout_s: float, memory_mb: int) -> str:
    if r.timed_out:
        raise ToolError(f"python: timed out after {timeout_s:g} s (wall clock); process killed")
    if r.output_limited:
        raise ToolError(f"python: more than {MAX_OUTPUT_BYTES} bytes of output; process killed")
    rc = r.returncode
    if rc == 97 and "dodai-sandbox: cannot drop privileges" in r.output:
        raise ToolError("python: the sandbox could not drop privileges; refusing to run")
    if rc is not None and rc < 0:
        why = _SIGNALS.get(-rc, f"signal {-rc}")
        if -rc == signal.SIGXCPU or -rc == signal.SIGKILL:
            why = f"CPU time limit ({max(1, int(-(-timeout_s // 1)))} s)"
        raise ToolError(f"python: process killed: {why}")
    out = r.output.rstrip("\n") or "(no output)"
    if rc:
        out += f"\n[exit status {rc}]"
    return out


def python_tool(timeout_s: float = 5.0, memory_mb: int = 256, *, audit_hook: bool = True) -> Tool:
    """The ``python`` tool: ``{"code": "print(2**100)"}`` → the printed output (its last part).

    ``audit_hook=False`` is for the R7.5 ablation only (what the kernel limits stop on their own)."""
    if timeout_s <= 0 or memory_mb < 32:
        raise ValueError("timeout_s must be positive and memory_mb at least 32")

    def fn(args: dict) -> str:
        code = args["code"]
        if len(code) > MAX_CODE_CHARS:
            raise ToolError(f"python: code longer than {MAX_CODE_CHARS} characters")
        if "\x00" in code:
            raise ToolError("python: code contains a NUL character")
        if not code.strip():
            raise ToolError("python: empty code")
        return _format(run_python(code, timeout_s, memory_mb, audit_hook=audit_hook), timeout_s, memory_mb)

    return Tool(
        name="python",
        description=("Run a Python 3 program (standard library only, no network, no files outside a temporary "
                     f"directory, {timeout_s:g} s and {memory_mb} MB limits) and return what it prints. "
                     "Use print() to show results."),
        parameters={"type": "object",
                    "properties": {"code": {"type": "string", "description": "the program; print the answer"}},
                    "required": ["code"]},
        fn=fn, max_output_chars=TAIL_CHARS + 200,
        meta={"timeout_s": timeout_s, "memory_mb": memory_mb, "audit_hook": audit_hook},
    )
