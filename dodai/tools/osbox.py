"""The operating-system sandbox the ``python`` tool runs in: bubblewrap namespaces, a seccomp filter, rlimits.

This module builds the ``bwrap`` command line (bubblewrap, the unprivileged sandbox Flatpak uses; Debian
package ``bubblewrap``) for one run of an interpreter, and the seccomp program it loads. What the child
gets:

- **namespaces** (``--unshare-all --unshare-user``): its own user namespace (uid/gid 65534 inside, all
  capabilities dropped with ``--cap-drop ALL``, no further user namespaces with ``--disable-userns``
  where bwrap supports it), pid namespace (it sees only itself and bwrap's reaper; it cannot signal or
  ``ptrace`` a host process), network namespace (only a down loopback: no host sockets, no abstract Unix
  sockets of the host, no internet), IPC namespace (no host SysV/POSIX IPC), UTS namespace and mount
  namespace; ``--new-session`` (no terminal injection), ``--die-with-parent`` (it dies with the host);
- **a file system of its own**: a fresh root tmpfs, remounted read-only, that holds only read-only bind
  mounts of what the interpreter needs — the executable, the directories of its ``sys.path`` under
  ``-I -S`` (the stdlib and ``lib-dynload``; a ``site-packages`` inside them is masked by an empty,
  read-only tmpfs), the shared libraries the executable and the stdlib extension modules link against
  (found once with ``ldd``; the loader finds them through ``LD_LIBRARY_PATH``) — and a private,
  size-limited tmpfs work dir (:data:`WORKDIR`, ``--size`` where bwrap supports it). No host ``/tmp``,
  ``/dev`` (no device node at all: a host inode the child could ``chmod`` — as root without the uid drop
  the sandbox user owns them — stays outside; ``os.urandom`` uses ``getrandom``), ``/dev/shm``, ``/proc``,
  ``/sys``, ``/etc`` (no ``passwd``: NSS finds nothing), home or project directory is visible; nothing
  the child writes reaches the host's disk, and the work dir vanishes with the mount namespace — there is
  no host-side cleanup to trick. Its standard input is an empty pipe, not the host's ``/dev/null``, and it
  inherits no other host file: the descriptors it holds are pipes, memfds and its own tmpfs;
- **a seccomp filter** (classic BPF assembled here, loaded by bwrap with ``--seccomp``; x86-64 and
  AArch64): a foreign architecture (e.g. the 32-bit ``int 0x80`` entry on x86-64) kills the process,
  x32 system calls and the calls in :data:`DENY` fail with ``EPERM`` — process and thread creation
  (``fork``, ``vfork``, ``clone``, ``clone3``), sockets of every family but ``AF_UNIX``, ``ptrace`` and
  ``process_vm_*``, namespaces and mounts, ``keyctl``, ``bpf``, ``userfaultfd``, ``perf_event_open``,
  ``io_uring``, kernel modules, ``kexec``, clocks, swap, reboot, and memory that would escape the
  address-space limit (``memfd_create``, SysV shared memory, message queues, semaphores);
- **rlimits** (set by the child's bootstrap in :mod:`dodai.tools.python_sandbox`): CPU seconds, address
  space, file size, open files, processes, no core dumps;
- **the host's uid drop**, when the host runs as root and the interpreter's files are readable by any
  user: bwrap itself starts as a fresh unprivileged uid, so the sandbox's uid 65534 is a nobody on the
  host too. When the interpreter lives somewhere only root can read (e.g. a pyenv under ``/root``), the
  sandbox uid maps to the host caller (still without capabilities, behind the namespaces and the filter);
  :attr:`Sandbox.host_uid_drop` says which.

Credits: bubblewrap (https://github.com/containers/bubblewrap) does the namespace work; the seccomp
deny list follows the spirit of the default profiles of Docker/Moby and Flatpak (facts about which
system calls are dangerous, not their code); the BPF layout is the one in the kernel's
``Documentation/userspace-api/seccomp_filter.rst``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import secrets
import shutil
import struct
import subprocess
import threading
from dataclasses import dataclass

from dodai.tools.base import ToolError

WORKDIR = "/sandbox"  # the child's cwd and TMPDIR inside the sandbox: a private tmpfs
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
UNSAFE_HINT = "or pass --unsafe-no-sandbox (unsafe_no_sandbox=True) to run without one, at your own risk"
SANDBOX_UID = 65534  # uid and gid inside the user namespace ("nobody")
PROBE_TIMEOUT_S = 30.0


class SandboxUnavailable(ToolError):
    """No working OS sandbox: bwrap is missing or cannot create namespaces here (one line, with a hint)."""


# ---- seccomp ----------------------------------------------------------------------------------------
# System-call numbers: x86-64 from <asm/unistd_64.h>, AArch64 from the generic table <asm-generic/unistd.h>.
_X86_64 = {
    "socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "fork": 57, "vfork": 58, "clone": 56,
    "clone3": 435, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "userfaultfd": 323,
    "perf_event_open": 298, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "iopl": 172, "ioperm": 173, "modify_ldt": 154, "swapon": 167, "swapoff": 168,
    "reboot": 169, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305, "acct": 163,
    "quotactl": 179, "quotactl_fd": 443, "lookup_dcookie": 212, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semget": 64, "semop": 65, "semctl": 66,
    "semtimedop": 220, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245, "kcmp": 312, "pidfd_open": 434, "pidfd_getfd": 438,
    "pidfd_send_signal": 424, "mbind": 237, "migrate_pages": 256, "move_pages": 279, "syslog": 103,
    "sysfs": 139, "uselib": 134, "ustat": 136, "vhangup": 153, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "fanotify_init": 300,
    "_sysctl": 156,
}
_AARCH64 = {
    "socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
    "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "clone": 220, "clone3": 435, "keyctl": 219,
    "add_key": 217, "request_key": 218, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241,
    "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "swapon": 224, "swapoff": 225, "reboot": 142, "settimeofday": 170, "clock_settime": 112, "adjtimex": 171,
    "clock_adjtime": 266, "acct": 89, "quotactl": 60, "quotactl_fd": 443, "lookup_dcookie": 18,
    "open_by_handle_at": 265, "name_to_handle_at": 264, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "shmat": 196,
    "shmctl": 195, "shmdt": 197, "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187, "semget": 190,
    "semop": 193, "semctl": 191, "semtimedop": 192, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182,
    "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185, "kcmp": 272, "pidfd_open": 434,
    "pidfd_getfd": 438, "pidfd_send_signal": 424, "mbind": 235, "migrate_pages": 238, "move_pages": 239,
    "syslog": 116, "vhangup": 58, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "fanotify_init": 262,
}
_ARCHES = {"x86_64": (0xC000003E, _X86_64, 0x40000000), "aarch64": (0xC00000B7, _AARCH64, None)}
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
# Denied with EPERM (names missing from an architecture's table do not exist there). socket() is denied
# for every family but AF_UNIX (checked on its first argument).
DENY = tuple(sorted(set(_X86_64) | set(_AARCH64)))
AF_UNIX = 1

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM = 1


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The filter as bwrap's ``--seccomp`` wants it: an array of ``struct sock_filter`` (8 bytes each,
    native byte order); ``None`` on an architecture this module has no system-call table for."""
    machine = (machine or platform.machine()).lower()
    machine = _ARCH_ALIASES.get(machine, machine)
    if machine not in _ARCHES or struct.pack("=I", 1) != struct.pack("<I", 1):
        return None
    audit_arch, table, x32_bit = _ARCHES[machine]
    numbers = sorted({table[n] for n in DENY if n in table and n != "socket"})
    # Labels are resolved into the 8-bit relative jumps of classic BPF (offsets counted from the next insn).
    prog: list[tuple] = [("ld", 4), ("jeq", audit_arch, 0, "kill"), ("ld", 0)]
    if x32_bit is not None:
        prog.append(("jge", x32_bit, "deny", 0))
    prog.append(("jeq", table["socket"], "socket", 0))
    prog += [("jeq", nr, "deny", 0) for nr in numbers]
    prog.append(("ret", _RET_ALLOW))
    labels = {"socket": len(prog)}
    prog += [("ld", 16), ("jeq", AF_UNIX, "allow", "deny")]  # args[0], low 32 bits (little-endian)
    labels["allow"] = len(prog)
    prog.append(("ret", _RET_ALLOW))
    labels["deny"] = len(prog)
    prog.append(("ret", _RET_ERRNO | _EPERM))
    labels["kill"] = len(prog)
    prog.append(("ret", _RET_KILL_PROCESS))

    def rel(target, i):
        if isinstance(target, int):
            return target
        off = labels[target] - i - 1
        if not 0 <= off <= 255:
            raise ValueError("seccomp program too long for an 8-bit jump")
        return off

    out = bytearray()
    for i, ins in enumerate(prog):
        if ins[0] == "ld":
            out += struct.pack("=HBBI", _BPF_LD_W_ABS, 0, 0, ins[1])
        elif ins[0] == "ret":
            out += struct.pack("=HBBI", _BPF_RET_K, 0, 0, ins[1])
        else:
            code = _BPF_JEQ_K if ins[0] == "jeq" else _BPF_JGE_K
            out += struct.pack("=HBBI", code, rel(ins[2], i), rel(ins[3], i), ins[1])
    return bytes(out)


# ---- what the interpreter needs -------------------------------------------------------------------
def _interpreter(python: str | None) -> str:
    """The real interpreter binary: the base installation's ``pythonX.Y`` (not a venv's symlink or copy,
    so no ``pyvenv.cfg`` is needed inside), or ``python`` when given."""
    import sys

    if python:
        return os.path.realpath(python)
    v = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for cand in (os.path.join(sys.base_exec_prefix, "bin", f"python{v}"),
                 os.path.join(sys.base_exec_prefix, "bin", "python3"), sys.executable):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.realpath(cand)
    raise SandboxUnavailable("python: no OS sandbox: cannot find the Python interpreter binary; " + UNSAFE_HINT)


def _run_quiet(argv: list[str], timeout: float = PROBE_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={}, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          close_fds=True)


def _sys_path(python: str) -> list[str]:
    """The interpreter's ``sys.path`` under ``-I -S`` (the stdlib directories), asked of it once."""
    r = _run_quiet([python, "-I", "-S", "-c", "import sys\nfor p in sys.path: print(p)"])
    if r.returncode != 0:
        raise SandboxUnavailable(f"python: no OS sandbox: {python} -I -S does not start; " + UNSAFE_HINT)
    return [p for p in r.stdout.decode("utf-8", "replace").splitlines() if p]


_LDD_PATH = re.compile(r"(?:=>\s*|^\s*)(/[^\s]+)\s+\(0x")
_FALLBACK_LIBDIRS = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib")


def _shared_libs(files: list[str]) -> tuple[list[str], bool]:
    """Absolute paths of the shared libraries ``files`` load (``ldd``), and whether ldd answered."""
    ldd = shutil.which("ldd") or next((p for p in ("/usr/bin/ldd", "/bin/ldd") if os.path.exists(p)), None)
    if not ldd:
        return [], False
    libs: set[str] = set()
    ok = False
    n = max(1, min(4, os.cpu_count() or 1))  # a few ldd processes side by side: ldd runs the loader per file
    procs = []
    try:
        for i in range(n):
            chunk = files[i::n]
            if chunk:
                procs.append(subprocess.Popen([ldd, *chunk], env={}, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True))
    except OSError:
        pass
    for p in procs:
        try:
            out, _ = p.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            continue
        ok = True
        for line in out.decode("utf-8", "replace").splitlines():
            m = _LDD_PATH.search(line)
            if m and os.path.exists(m.group(1)):
                libs.add(m.group(1))
    return sorted(libs), ok


def _world_readable(path: str) -> bool:
    """Whether any user can reach and read ``path`` (every ancestor searchable by others)."""
    import stat

    p = os.path.abspath(path)
    try:
        st = os.stat(p)
        if not st.st_mode & stat.S_IROTH or (stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH):
            return False
        while p != "/":
            p = os.path.dirname(p)
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _bwrap_features(bwrap: str) -> set[str]:
    try:
        r = _run_quiet([bwrap, "--help"], timeout=10.0)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", r.stdout.decode("utf-8", "replace"), re.M))


# Extension modules whose shared libraries are not bound (importing them in the sandbox fails): GUI,
# terminal, sound, network and password-database modules — about half of the libraries, a bind mount each.
SKIP_EXTENSIONS = frozenset({"_tkinter", "_curses", "_curses_panel", "readline", "nis", "ossaudiodev", "spwd",
                             "_ssl", "_crypt"})
REQUIRED = ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "--seccomp",
            "--remount-ro", "--ro-bind", "--tmpfs", "--chdir", "--uid", "--gid", "--setenv", "--symlink")


@dataclass(frozen=True)
class Sandbox:
    """A bwrap set-up that has been probed and works on this machine (see the module docstring)."""

    bwrap: str
    python: str  # the interpreter, at the same path inside as outside
    ro_paths: tuple[str, ...]  # host paths bound read-only at the same place (files and directories)
    masks: tuple[str, ...]  # directories inside ro_paths hidden behind an empty read-only tmpfs
    lib_dirs: tuple[str, ...]  # LD_LIBRARY_PATH of the interpreter inside
    seccomp: bytes | None
    sized_tmpfs: bool  # bwrap knows --size: the work dir's size is a kernel limit
    disable_userns: bool
    host_uid_drop: bool  # bwrap starts as a fresh unprivileged host uid (host is root)
    libs_from_ldd: bool  # False: ldd was missing and whole library directories are bound instead

    def argv(self, inner: list[str], *, work_bytes: int, seccomp_fd: int | None) -> list[str]:
        """The full ``bwrap ... -- inner`` command line."""
        a = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
             "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
        if self.disable_userns:
            a.append("--disable-userns")
        for p in self.ro_paths:
            if os.path.islink(p) and p in _FALLBACK_LIBDIRS:  # merged-/usr layouts: /lib -> usr/lib
                a += ["--symlink", os.readlink(p), p]
            else:
                a += ["--ro-bind", p, p]
        for m in self.masks:
            a += ["--tmpfs", m, "--remount-ro", m]
        if self.sized_tmpfs:
            a += ["--size", str(work_bytes)]
        a += ["--tmpfs", WORKDIR, "--remount-ro", "/", "--chdir", WORKDIR]
        if self.lib_dirs:
            a += ["--setenv", "LD_LIBRARY_PATH", ":".join(self.lib_dirs)]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        return a + ["--", *inner]

    def popen_kwargs(self) -> dict:
        """Extra :class:`subprocess.Popen` arguments: the host uid drop, when this set-up uses one."""
        if not self.host_uid_drop:
            return {}
        uid = 20000 + secrets.randbelow(40000)
        return {"user": uid, "group": uid, "extra_groups": []}


def seccomp_fd(program: bytes) -> int:
    """An inheritable descriptor bwrap reads the filter from (a memfd, or an unlinked temporary file)."""
    return data_fd(program)


def data_fd(data: bytes) -> int:
    """``data`` behind an inheritable, seekable descriptor at offset 0 that names no file on any disk
    (a memfd; an anonymous ``O_TMPFILE`` where memfd is missing)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("dodai-sandbox", 0)
    else:  # pragma: no cover - Linux always has memfd_create
        import tempfile

        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


_CACHE: dict[tuple, Sandbox | SandboxUnavailable] = {}
_LOCK = threading.Lock()


def _unavailable(why: str) -> SandboxUnavailable:
    return SandboxUnavailable(f"python: no OS sandbox ({why}); {INSTALL_HINT}, {UNSAFE_HINT}")


DEFAULT_BWRAP: str | None = None  # None: ``bwrap`` on PATH, else /usr/bin/bwrap or /bin/bwrap


def _locate_bwrap(bwrap: str | None) -> str:
    if bwrap is None:
        bwrap = DEFAULT_BWRAP or shutil.which("bwrap") or next(
            (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)), None)
        if bwrap is None:
            raise _unavailable("bwrap not found")
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        raise _unavailable(f"{bwrap} is not an executable file")
    return os.path.realpath(bwrap)


def find_sandbox(bwrap: str | None = None, python: str | None = None, *, host_uid_drop: bool | None = None
                 ) -> Sandbox:
    """The probed :class:`Sandbox` for ``bwrap`` (default: :data:`DEFAULT_BWRAP`, else ``bwrap`` on
    ``PATH``) and ``python`` (default: this interpreter's base installation), cached per process; raises
    :class:`SandboxUnavailable` with a one-line reason and the install hint when bwrap is missing, too old,
    or cannot create namespaces here.

    ``host_uid_drop``: ``None`` = when the host runs as root and the interpreter's files are readable by
    any user; ``False`` never; ``True`` insists (unavailable if it cannot work).
    """
    key = (_locate_bwrap(bwrap), python, host_uid_drop)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            try:
                hit = _probe(key[0], python, host_uid_drop)
            except SandboxUnavailable as e:
                hit = e
            _CACHE[key] = hit
    if isinstance(hit, SandboxUnavailable):
        raise SandboxUnavailable(str(hit))
    return hit


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _probe(bwrap: str, python: str | None, host_uid_drop: bool | None) -> Sandbox:
    feats = _bwrap_features(bwrap)
    missing = [f for f in REQUIRED if f not in feats]
    if missing:
        raise _unavailable(f"{bwrap} does not work or lacks {', '.join(missing[:3])}")
    exe = _interpreter(python)
    roots: list[str] = []
    path_dirs = sorted({os.path.realpath(p) for p in _sys_path(exe) if os.path.isdir(p)})
    for p in path_dirs:
        if os.path.isdir(p) and not any(p.startswith(r + os.sep) for r in roots):
            roots.append(p)
    masks = tuple(os.path.join(r, d) for r in roots for d in ("site-packages", "dist-packages")
                  if os.path.isdir(os.path.join(r, d)))
    # Extension modules live directly in sys.path directories (lib-dynload): ldd those and the executable,
    # except modules useless without a display, a terminal or the network (their libraries stay outside).
    so_files = [exe] + sorted({os.path.join(d, f) for d in path_dirs for f in os.listdir(d)
                               if f.endswith(".so") and f.split(".")[0] not in SKIP_EXTENSIONS})
    libs, from_ldd = _shared_libs(so_files)
    if from_ldd:
        lib_paths = libs
    else:  # no ldd: the usual library directories, whole
        lib_paths = [p for p in _FALLBACK_LIBDIRS if os.path.lexists(p)]
    # No /etc/ld.so.cache inside (no /etc at all): the loader finds the bound libraries through
    # LD_LIBRARY_PATH, which glibc reads once at start-up (the bootstrap then clears the environment).
    lib_dirs = tuple(dict.fromkeys(os.path.dirname(p) if p in libs else p for p in lib_paths))
    ro = tuple(dict.fromkeys([exe, *roots, *lib_paths]))
    ro = tuple(p for p in ro if not any(p.startswith(r + os.sep) for r in roots if r != p))
    auto = host_uid_drop is None
    if auto:
        host_uid_drop = (os.geteuid() == 0 and all(_world_readable(p) for p in ro + (bwrap,)))
    sb = Sandbox(bwrap, exe, ro, masks, lib_dirs, seccomp_program(), "--size" in feats,
                 "--disable-userns" in feats, bool(host_uid_drop), from_ldd)
    try:
        _check(sb)
    except SandboxUnavailable:
        if not (auto and sb.host_uid_drop):
            raise
        # e.g. unprivileged user namespaces switched off: bwrap then works only as the calling user
        sb = dataclasses.replace(sb, host_uid_drop=False)
        _check(sb)
    return sb


PROBE_CODE = ("import os, sys, json, hashlib, decimal\n"
              "assert os.getcwd() == sys.argv[1], os.getcwd()\n"
              "open('probe', 'w').write('ok')\n"
              "print(open('probe').read(), os.getuid())\n")


def _check(sb: Sandbox) -> None:
    """Run a tiny program in the sandbox: it must start, import the stdlib and write in its work dir."""
    fd = seccomp_fd(sb.seccomp) if sb.seccomp is not None else None
    try:
        argv = sb.argv([sb.python, "-I", "-S", "-B", "-c", PROBE_CODE, WORKDIR], work_bytes=1 << 20,
                       seccomp_fd=fd)
        r = subprocess.run(argv, env={}, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S,
                           close_fds=True, pass_fds=() if fd is None else (fd,), **sb.popen_kwargs())
    except (OSError, subprocess.SubprocessError) as e:
        raise _unavailable(f"{sb.bwrap} failed to run: {type(e).__name__}: {e}") from None
    finally:
        if fd is not None:
            os.close(fd)
    out = r.stdout.decode("utf-8", "replace").split()
    if r.returncode != 0 or out != ["ok", str(SANDBOX_UID)]:
        err = " ".join(r.stderr.decode("utf-8", "replace").split())[-200:] or f"exit status {r.returncode}"
        raise _unavailable(f"bwrap cannot create the sandbox here: {err}")
