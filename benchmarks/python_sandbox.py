"""The python tool's OS sandbox: start-up overhead, and the attack counts with it.

Measures, interleaved (A, B, A, B, ...) so machine load hits both sides alike:

- a bare interpreter start, ``python -I -S -c pass``, with and without bubblewrap around it (the same
  bwrap command line the tool uses, seccomp filter included): the sandbox's own start cost;
- one whole tool call, ``run_python("pass")`` (bootstrap, pre-imports, rlimits, audit hook), with the
  OS sandbox and with ``unsafe_no_sandbox=True``;
- the one-time probe per process (:func:`dodai.tools.osbox.find_sandbox`: ``ldd`` over the interpreter
  and its extension modules, one test run), in a fresh process;

wall time (median) and, without bwrap, the children's CPU time (median, from ``RUSAGE_CHILDREN``; inside
bwrap's pid namespace the reaper waits for python, so its CPU time does not reach this process), then runs the R7.5
red-team suite and the sandbox-escape programs to count what holds. Writes a Markdown report.

    python benchmarks/python_sandbox.py [--repeats 30] [--out benchmarks/results/python_sandbox.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fn):
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results/python_sandbox.md")
    args = ap.parse_args()

    from dodai.tools import osbox
    from dodai.tools.python_sandbox import run_python
    from dodai.tools.redteam import ATTACKS, BENIGN, SANDBOX_ESCAPES, Harness, _fill, summarize

    probe = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter()\n"
                            "from dodai.tools.osbox import find_sandbox; find_sandbox()\n"
                            "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
    probe_s = float(probe.stdout.strip())
    sb = osbox.find_sandbox()
    bare = [sb.python, "-I", "-S", "-c", "pass"]

    def in_bwrap():
        fd = osbox.seccomp_fd(sb.seccomp) if sb.seccomp is not None else None
        try:
            subprocess.run(sb.argv(bare, work_bytes=64 << 20, seccomp_fd=fd), env={}, check=True,
                           pass_fds=() if fd is None else (fd,), **sb.popen_kwargs())
        finally:
            if fd is not None:
                os.close(fd)

    sides = {"bare python, no sandbox": lambda: subprocess.run(bare, env={}, check=True),
             "bare python in bwrap": in_bwrap,
             "tool call, unsafe_no_sandbox": lambda: run_python("pass", 5.0, 256, unsafe_no_sandbox=True),
             "tool call, OS sandbox": lambda: run_python("pass", 5.0, 256)}
    for fn in sides.values():  # warm the page cache
        fn()
    times = {k: [] for k in sides}
    for _ in range(args.repeats):
        for k, fn in sides.items():
            times[k].append(_timed(fn))

    with tempfile.TemporaryDirectory(prefix="dodai-bench-") as work:
        h = Harness(Path(work), python_timeout_s=1.0, memory_mb=128, n_docs=300)
        outcomes = h.run_all(ATTACKS + BENIGN)
        rows = summarize(outcomes)
        failures = [f"{o.case.tool}/{o.case.name}: {o.why[:160]}" for o in outcomes if not o.passed]
    subs = {"token": "benchtoken", "host_pid": str(os.getpid()), "port": "1", "abstract": "dodai-bench-none",
            "canary": "/nonexistent/canary", "hostname": os.uname().nodename, "limit_mb": str(128 + 64)}
    held = {hook: sum("ESCAPED" not in run_python(_fill(e.code, subs), 3.0, 128, audit_hook=hook).output
                      for e in SANDBOX_ESCAPES) for hook in (True, False)}

    # kernel memory the size limits do not count: empty files in the work dir within one 3 s call
    files_code = ("import os, time\nt = time.time(); n = 0\nfd = os.open('.', os.O_RDONLY)\n"
                  "while time.time() - t < 2.5:\n    for _ in range(1000):\n"
                  "        os.close(os.open('f%d' % n, os.O_CREAT | os.O_WRONLY, dir_fd=fd)); n += 1\nprint(n)")
    n_files = int(run_python(files_code, 3.0, 128, audit_hook=False).output.split()[-1])

    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# The python tool's OS sandbox: start-up overhead and attack counts",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}",
        f"- machine: {os.cpu_count()} cores (nproc), {_cpu_model()}, Linux {platform.release()}, Python "
        f"{platform.python_version()}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        "(shared with other jobs: compare the differences, not the seconds)",
        f"- bubblewrap: {subprocess.run([sb.bwrap, '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"seccomp filter {'on' if sb.seccomp else 'off'} ({len(sb.seccomp or b'') // 8} BPF instructions), "
        f"{len(sb.ro_paths)} read-only binds, host uid drop: {sb.host_uid_drop}",
        f"- command: `python benchmarks/python_sandbox.py --repeats {args.repeats}`; medians of {args.repeats} "
        "interleaved runs; CPU = the children's user+system time (not visible through bwrap)",
        "",
        "| what | wall ms | CPU ms |",
        "|---|---|---|",
    ]
    # CPU time inside bwrap is not visible: the pid namespace's reaper, not this process, waits for python
    lines += [f"| {k} | {1000 * w:.1f} | {'n/a' if 'bwrap' in k or 'OS sandbox' in k else f'{1000 * c:.1f}'} |"
              for k, (w, c) in med.items()]
    d_bare = med["bare python in bwrap"][0] - med["bare python, no sandbox"][0]
    d_tool = med["tool call, OS sandbox"][0] - med["tool call, unsafe_no_sandbox"][0]
    lines += [
        "",
        f"Sandbox start overhead: {1000 * d_bare:.1f} ms per bare start, {1000 * d_tool:.1f} ms per tool call "
        f"(wall, medians). One-time probe per process (`find_sandbox`): {probe_s:.2f} s.",
        "",
        "## Attacks with the OS sandbox",
        "",
        "| tool | attacks blocked | benign calls blocked |",
        "|---|---|---|",
    ]
    lines += [f"| {r['tool']} | {r['blocked']}/{r['attacks']} | {r['false_blocks']}/{r['benign']} |" for r in rows]
    if failures:
        lines += ["", "Failures in this run:", ""] + [f"- {f}" for f in failures]
    lines += ["", f"Sandbox-escape programs (`redteam.SANDBOX_ESCAPES`) held: {held[True]}/{len(SANDBOX_ESCAPES)} "
              f"with the audit hook, {held[False]}/{len(SANDBOX_ESCAPES)} without it.", "",
              f"Residual (not bounded by the size limits, freed when the sandbox ends): {n_files:,} empty files "
              "created in the work dir in 2.5 s of one call (hook off), i.e. that many tmpfs inodes of kernel "
              "memory (roughly a kilobyte each).", ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
