"""A ``python`` tool: run model-written code inside an operating-system sandbox, with rlimits and an audit hook.

**The security boundary is the operating system**, set up by :mod:`dodai.tools.osbox`: the child runs
under bubblewrap (``bwrap``) in its own user, pid, network, IPC, UTS and mount namespaces, with all
capabilities dropped, a seccomp filter, kernel rlimits, a wall clock and output caps. What the child can
see is a read-only root holding only the interpreter, its stdlib and the shared libraries they load, and a
private, size-limited tmpfs work dir (:data:`~dodai.tools.osbox.WORKDIR`, its cwd and ``TMPDIR``). In
particular:

- **no host files**: no ``/etc`` (so no ``passwd`` through NSS), ``/home``, project, host ``/tmp``,
  ``/dev`` (no device nodes, not even ``os.devnull``), ``/dev/shm``, ``/proc`` or ``/sys``, and no
  descriptor of a host file (stdin is an empty pipe); everything outside the work dir is read-only;
  nothing it writes reaches the host's disk, and the work dir disappears with its mount namespace — the
  host never cleans up (never follows) anything the child made;
- **no network and no host IPC**: a network namespace with only a down loopback; a private IPC namespace;
  the seccomp filter refuses sockets of every family but ``AF_UNIX`` (which can reach nothing outside);
- **no new processes or threads, no signals to the host**: ``fork``/``vfork``/``clone``/``clone3`` fail
  (seccomp), ``RLIMIT_NPROC`` = 1 as a second layer; the pid namespace holds only the child and bwrap's
  reaper; ``--die-with-parent`` and a killed process group end it with the host's call;
- **bounded resources**: ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space, ``memory_mb``),
  ``RLIMIT_FSIZE`` (largest file), ``RLIMIT_NOFILE``, ``RLIMIT_CORE`` = 0, soft = hard; the work dir's
  tmpfs holds at most ``disk_mb``; ``memfd_create`` and SysV/POSIX shared memory and queues are refused,
  so the work dir is the only memory outside the address-space limit (kernel objects aside: see the
  residual risks); the wall clock starts when the user
  code starts (start-up has its own bound, :data:`STARTUP_S`) and output past ``max_output_bytes`` kills
  the child; the result is the *tail* of stdout+stderr;
- **the host's uid drop** (host running as root, interpreter readable by anyone): bwrap starts as a fresh
  unprivileged host uid, so the sandbox user is a nobody outside too (see :mod:`dodai.tools.osbox`).

What one call does (:func:`run_python`): the code goes to the child through an anonymous memfd (no file
on the host), bwrap starts ``python -I -S -B -u -c BOOTSTRAP`` (isolated mode, no ``site``, no bytecode
writes, unbuffered) with an empty environment and an empty pipe as stdin; the bootstrap compiles the
code, pre-imports :data:`PREIMPORT`, sets the rlimits, installs the audit hook, tells the host through a
one-byte pipe that the user code starts, and runs it in a fresh globals dict.

**What is not the boundary: the audit hook.** A ``sys.addaudithook`` hook (PEP 578) still refuses, with
a clear ``... blocked by the sandbox`` message, the things a model commonly tries — ``os.system``,
``subprocess``, ``open('/etc/passwd')``, sockets, ``ctypes``, paths outside the work dir, importing
:data:`BLOCKED_MODULES` — because a refusal the model can read is more useful than ``FileNotFoundError``.
It lives inside the attacker's process: its closures are reachable through the garbage collector,
extension modules load under other names, ``dir_fd=`` paths and NSS do not raise the events it checks.
Every guarantee above holds with it switched off (``audit_hook=False``; the tests check that).

**Residual risks**, what this does not stop: a bug in the Linux kernel reachable through the system calls
the filter allows (namespaces and seccomp shrink that surface, they do not remove it); CPU, memory and
wall time *within* the limits of one call (the host pays up to ``timeout_s`` CPU seconds and ``memory_mb``
+ ``disk_mb`` of RAM); kernel memory the size limits do not count, freed when the sandbox ends and bounded
only by the wall clock and ``RLIMIT_NOFILE`` — file-system metadata (empty files and directories in the
work dir cost no tmpfs size but about a kilobyte of kernel memory each) and pipe or socket buffers;
reading what is bound read-only (the interpreter, the stdlib, the shared libraries — public files); a
bwrap or kernel configured differently (bwrap without ``--size`` leaves the work dir's size bounded only by
``RLIMIT_FSIZE`` per file and the wall clock; an architecture other than x86-64 or AArch64 runs without
the seccomp filter — :attr:`~dodai.tools.osbox.Sandbox.seccomp` is then ``None``). As root with an
interpreter only root can read (e.g. under ``/root``) there is no host uid drop: the sandbox's uid 65534
maps to root outside — without any capability, and with no host inode within reach that is not mounted
read-only, but a kernel escape would land as root.

**When no OS sandbox is available** (no ``bwrap``, or it cannot create namespaces here) the tool refuses
to run with a one-line :class:`~dodai.tools.osbox.SandboxUnavailable` that says how to install
bubblewrap — unless the caller opts in with ``unsafe_no_sandbox=True`` (CLI: ``--unsafe-no-sandbox``).
Then the child is a plain process in a host temp dir with the rlimits, the audit hook and (as root) a
uid drop — the old design, which the issue tracker showed an attacker can get around; the temp dir is
removed descriptor-relative (``O_NOFOLLOW``, no recursion, no ``chmod`` through links).
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from dodai.tools import osbox
from dodai.tools.base import Tool, ToolError
from dodai.tools.osbox import SandboxUnavailable  # noqa: F401 (re-exported for callers)

MAX_CODE_CHARS = 100_000
MAX_OUTPUT_BYTES = 1_000_000  # kill the child once it has written this much (enormous-output attacks)
TAIL_CHARS = 2000  # what comes back to the model: the last characters of the output
FILE_SIZE_MB = 8  # RLIMIT_FSIZE: largest file the child may write
DISK_MB = 64  # size of the sandbox's tmpfs work dir (all files together)
OPEN_FILES = 64  # RLIMIT_NOFILE
MAX_WRITE_OPENS = 64  # the hook refuses more opens for writing (a friendly message before the tmpfs fills)
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

# The child's bootstrap (run with -c). argv: code fd, work dir, uid (-1 = keep), CPU s, AS bytes, FSIZE bytes,
# NOFILE, ready-pipe fd, run id (unused: it names the process for the host). Stdlib only; the user code runs in a
# fresh globals dict.
BOOTSTRAP = r'''
import sys, os, resource, builtins
_code_fd, _root = int(sys.argv[1]), sys.argv[2]
_uid, _cpu, _mem, _fsize, _nofile, _ready = map(int, sys.argv[3:9])
with open(_code_fd, "rb") as f:  # an anonymous memfd from the host; closed here
    _src = f.read().decode("utf-8")
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
    returncode: int | None  # the exit status the host saw (negative: killed by that signal)
    seconds: float
    timed_out: bool = False
    output_limited: bool = False
    total_bytes: int = 0
    signal: int | None = None  # the signal that ended the program, if one did (also through bwrap)
    sandboxed: bool = True  # False: ran with unsafe_no_sandbox (no OS sandbox)
    run_id: str = ""  # a random id on the child's command line: lets tests look for stray processes


def _open_dir(name: str, dir_fd: int) -> int:
    """Open directory ``name`` under ``dir_fd`` without following a symlink; if it is unreadable, make it
    readable through an ``O_PATH`` descriptor of that very directory (never through a path)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)  # the magic link names the opened inode itself
            return os.open(f"/proc/self/fd/{path_fd}", flags & ~os.O_NOFOLLOW)
        finally:
            os.close(path_fd)


def _remove_tree(path: str) -> None:
    """Delete the directory ``path`` and everything in it, whatever the child left there: no symlink is
    followed (every step is relative to an open directory descriptor, with ``O_NOFOLLOW``), unreadable
    directories are made readable only through a descriptor of themselves, and depth costs no recursion
    (one directory descriptor open at a time; the way up is ``..`` checked against the recorded inode).
    Used only without the OS sandbox: the sandbox's work dir is a tmpfs that vanishes with its namespace."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    top = os.fstat(fd)
    # One frame per directory level: (its name in the parent, the parent's (dev, ino), names left in it).
    stack: list[tuple[str, tuple[int, int], list[str]]] = []
    names = os.listdir(fd)
    try:
        while True:
            descended = False
            while names:
                name = names.pop()
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    try:
                        os.unlink(name, dir_fd=fd)
                    except PermissionError:  # a directory made unwritable: fix it through its descriptor
                        os.fchmod(fd, 0o700)
                        os.unlink(name, dir_fd=fd)
                    continue
                try:
                    os.rmdir(name, dir_fd=fd)
                    continue
                except PermissionError:
                    os.fchmod(fd, 0o700)
                    try:
                        os.rmdir(name, dir_fd=fd)
                        continue
                    except OSError:
                        pass
                except OSError:
                    pass
                child = _open_dir(name, fd)
                cst = os.fstat(child)
                if (cst.st_dev, cst.st_ino) != (st.st_dev, st.st_ino):  # swapped under us: leave it
                    os.close(child)
                    continue
                me = os.fstat(fd)
                stack.append((name, (me.st_dev, me.st_ino), names))
                os.close(fd)
                fd, names, descended = child, os.listdir(child), True
                break
            if descended:
                continue
            if not stack:
                break
            name, parent_id, names = stack.pop()
            parent = os.open("..", flags, dir_fd=fd)
            pst = os.fstat(parent)
            os.close(fd)
            fd = parent
            if (pst.st_dev, pst.st_ino) != parent_id:
                raise OSError(f"directory moved while removing {path}")
            try:
                os.rmdir(name, dir_fd=fd)
            except PermissionError:
                os.fchmod(fd, 0o700)
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    st = os.stat(path, follow_symlinks=False)
    if (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino):
        os.rmdir(path)


def _signal_of(returncode: int | None, sandboxed: bool) -> int | None:
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    # bwrap reports a child killed by signal N as exit status 128 + N (a program may also exit with such
    # a status itself; then the message names a signal that did not happen — only the wording suffers).
    if sandboxed and 128 < returncode < 128 + signal.NSIG:
        return returncode - 128
    return None


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 256, *, disk_mb: int = DISK_MB,
               drop_privileges: bool | None = None, max_output_bytes: int = MAX_OUTPUT_BYTES,
               tail_chars: int = TAIL_CHARS, audit_hook: bool = True, unsafe_no_sandbox: bool = False,
               bwrap: str | None = None, python: str | None = None) -> RunResult:
    """Run ``code`` as described in the module docstring; never raises for what the code does.

    Raises :class:`~dodai.tools.osbox.SandboxUnavailable` (a one-line :class:`ToolError`) when there is no
    working OS sandbox, unless ``unsafe_no_sandbox``. ``bwrap``/``python``: the bubblewrap binary and the
    interpreter to use (default: ``bwrap`` on ``PATH``, this interpreter's base installation).
    ``drop_privileges``: with the sandbox, whether bwrap starts as an unprivileged host uid (default: when
    the host is root and the interpreter is readable by anyone); without it, whether the child drops to
    one (default: when root). ``audit_hook=False`` leaves the hook out — for tests and the ablation that
    check the OS limits hold on their own.
    """
    sb = None if unsafe_no_sandbox else osbox.find_sandbox(bwrap, python, host_uid_drop=drop_privileges)
    cpu = max(1, int(-(-timeout_s // 1)))  # whole seconds, rounded up
    run_id = secrets.token_hex(8)
    boot = _bootstrap_source()
    if not audit_hook:
        boot = boot.replace("\n_install(os.path.realpath", "\n(lambda *a: None)(os.path.realpath")
    fds: list[int] = []  # descriptors the child inherits; the host closes its copies once it started
    tmp, ready_r = None, -1
    t0 = time.perf_counter()
    try:
        code_fd = osbox.data_fd(code.encode("utf-8", "surrogatepass"))
        fds.append(code_fd)
        ready_r, ready_w = os.pipe()  # the child writes one byte here when the user code starts
        fds.append(ready_w)
        os.set_inheritable(ready_w, True)
        if sb is not None:
            root, uid, popen_extra = osbox.WORKDIR, -1, sb.popen_kwargs()
            exe = sb.python
        else:
            if drop_privileges is None:
                drop_privileges = hasattr(os, "geteuid") and os.geteuid() == 0
            uid = 20000 + secrets.randbelow(40000) if drop_privileges else -1
            tmp = tempfile.mkdtemp(prefix="dodai-py-")
            if uid >= 0:
                os.chown(tmp, uid, uid)
            root, popen_extra, exe = tmp, {}, sys.executable
        inner = [exe, "-I", "-S", "-B", "-u", "-c", boot, str(code_fd), root, str(uid), str(cpu),
                 str(memory_mb * 2**20), str(FILE_SIZE_MB * 2**20), str(OPEN_FILES), str(ready_w),
                 f"dodai-sandbox-run-{run_id}"]
        if sb is not None:
            sfd = osbox.seccomp_fd(sb.seccomp) if sb.seccomp is not None else None
            if sfd is not None:
                fds.append(sfd)
            argv, cwd = sb.argv(inner, work_bytes=disk_mb * 2**20, seccomp_fd=sfd), "/"
        else:
            argv, cwd = inner, tmp
        try:
            # stdin: an empty pipe (EOF), not /dev/null — a descriptor of a host inode the child could fchmod
            proc = subprocess.Popen(argv, cwd=cwd, env={}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    pass_fds=tuple(fds), **popen_extra)
            proc.stdin.close()
        except OSError as e:
            if sb is None:
                raise
            raise SandboxUnavailable(f"python: cannot start {sb.bwrap} ({e.strerror or e}); "
                                     f"{osbox.INSTALL_HINT}, {osbox.UNSAFE_HINT}") from None
        finally:
            for fd in fds:
                os.close(fd)
            fds.clear()
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
            # The group (bwrap, or the child without the sandbox), then the process itself; bwrap's
            # --die-with-parent and its pid namespace take everything inside down with it.
            for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            proc.wait()
            proc.stdout.close()
            os.close(ready_r)
            ready_r = -1
        text = bytes(buf[-keep:]).decode("utf-8", errors="replace")
        if len(text) > tail_chars or total > len(buf):
            text = f"… [{total} bytes of output; the last {min(len(text), tail_chars)} characters]\n" \
                   + text[-tail_chars:]
        return RunResult(text, proc.returncode, time.perf_counter() - t0, timed_out, limited, total,
                         _signal_of(proc.returncode, sb is not None), sb is not None, run_id)
    finally:
        for fd in fds + ([ready_r] if ready_r >= 0 else []):
            os.close(fd)
        if tmp is not None:
            try:
                _remove_tree(tmp)
            except OSError:  # e.g. no /proc to fix an unreadable directory: leave it rather than crash
                pass


_SIGNALS = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed", signal.SIGXFSZ: "file size limit",
            signal.SIGSEGV: "segmentation fault (stack overflow?)", signal.SIGABRT: "aborted",
            signal.SIGSYS: "forbidden system call"}


def _format(r: RunResult, timeout_s: float, memory_mb: int) -> str:
    if r.timed_out:
        raise ToolError(f"python: timed out after {timeout_s:g} s (wall clock); process killed")
    if r.output_limited:
        raise ToolError(f"python: more than {MAX_OUTPUT_BYTES} bytes of output; process killed")
    rc = r.returncode
    if rc == 97 and "dodai-sandbox: cannot drop privileges" in r.output:
        raise ToolError("python: the sandbox could not drop privileges; refusing to run")
    if r.signal is not None:
        why = _SIGNALS.get(r.signal, f"signal {r.signal}")
        if r.signal in (signal.SIGXCPU, signal.SIGKILL):
            why = f"CPU time limit ({max(1, int(-(-timeout_s // 1)))} s)"
        raise ToolError(f"python: process killed: {why}")
    out = r.output.rstrip("\n") or "(no output)"
    if rc:
        out += f"\n[exit status {rc}]"
    return out


def python_tool(timeout_s: float = 5.0, memory_mb: int = 256, *, audit_hook: bool = True,
                unsafe_no_sandbox: bool = False, bwrap: str | None = None, disk_mb: int = DISK_MB) -> Tool:
    """The ``python`` tool: ``{"code": "print(2**100)"}`` → the printed output (its last part).

    Each call raises :class:`~dodai.tools.osbox.SandboxUnavailable` (a one-line :class:`ToolError` with
    the install hint) when there is no working OS sandbox, unless ``unsafe_no_sandbox``.
    ``audit_hook=False`` is for the R7.5 ablation only (what the OS sandbox and kernel limits stop on
    their own)."""
    if timeout_s <= 0 or memory_mb < 32 or disk_mb < 1:
        raise ValueError("timeout_s must be positive, memory_mb at least 32 and disk_mb at least 1")

    def fn(args: dict) -> str:
        code = args["code"]
        if len(code) > MAX_CODE_CHARS:
            raise ToolError(f"python: code longer than {MAX_CODE_CHARS} characters")
        if "\x00" in code:
            raise ToolError("python: code contains a NUL character")
        if not code.strip():
            raise ToolError("python: empty code")
        return _format(run_python(code, timeout_s, memory_mb, disk_mb=disk_mb, audit_hook=audit_hook,
                                  unsafe_no_sandbox=unsafe_no_sandbox, bwrap=bwrap), timeout_s, memory_mb)

    return Tool(
        name="python",
        description=("Run a Python 3 program (standard library only, no network, no files outside a temporary "
                     f"directory, {timeout_s:g} s and {memory_mb} MB limits) and return what it prints. "
                     "Use print() to show results."),
        parameters={"type": "object",
                    "properties": {"code": {"type": "string", "description": "the program; print the answer"}},
                    "required": ["code"]},
        fn=fn, max_output_chars=TAIL_CHARS + 200,
        meta={"timeout_s": timeout_s, "memory_mb": memory_mb, "disk_mb": disk_mb, "audit_hook": audit_hook,
              "sandbox": "none (unsafe)" if unsafe_no_sandbox else "bubblewrap"},
    )
