"""R7.5 — tool use: calculator, sandboxed Python, read-only SQL, document search, against hostile input.

The red-team suite (:mod:`dodai.tools.redteam`) sends every tool its named attacks — fork bomb,
``__import__('os').system``, reading ``/etc/passwd``, writing outside the sandbox, sockets, ``ctypes``,
memory bombs, infinite loops, ``9**9**9``, huge factorials, deep nesting, ``DROP TABLE``, ``ATTACH``,
stacked ``; DELETE``, ``load_extension``, infinite recursive CTEs, enormous outputs, path-traversal-looking
search queries … — and a benign set that must work (the false-block check). After every call the
harness checks the host: a canary file and an ``outside/`` directory next to the sandboxes, and the
SQLite file's SHA-256, must be unchanged.

Measured: per tool, the blocked-attack rate, the false-block rate on the benign set and the median
latency per call; a few example calls. The full run adds

* an **ablation** of the Python sandbox: every Python attack again *without the audit hook*, i.e. with the OS
  sandbox alone (bubblewrap namespaces, a private read-only file system, the seccomp filter, rlimits;
  :mod:`dodai.tools.osbox`). The hook only gives friendlier messages; the boundary is the operating system, so
  every attack must stay harmless here too;
* benign-call latency with the default limits (5 s, 256 MB), repeated, and search over the whole
  python-docs corpus (BM25).

Quick mode (the test) asserts: every attack blocked, every benign call succeeds. Figures of full runs live in
the committed evidence (``evidence/R7.5``), not here.
"""

from __future__ import annotations

import statistics
from pathlib import Path


def _example_rows(outcomes, names) -> list[dict]:
    rows = []
    for o in outcomes:
        if (o.case.tool, o.case.name) in names:
            text = o.error if o.error is not None else o.result
            text = " ".join((text or "").split())
            rows.append({"tool": o.case.tool, "case": o.case.name, "expect": o.case.expect,
                         "arguments": str(next(iter(o.case.args.values())))[:60].replace("|", "\\|").replace("\n", "⏎"),
                         "outcome": ("ToolError: " if o.error is not None else "")
                         + (text[:110] if o.case.expect in ("ok", "safe") else text[-110:]).replace("|", "\\|"),
                         "ms": round(o.seconds * 1000, 2)})
    return rows


EXAMPLES = {("calculator", "exact_decimal"), ("calculator", "power_tower"), ("python", "primes"),
            ("python", "read_passwd"), ("python", "fork_bomb"), ("python", "memory_bomb"), ("python", "infinite_loop"),
            ("sql", "join"), ("sql", "stacked_delete"), ("sql", "infinite_cte"), ("search", "json"),
            ("search", "path_traversal")}


def run(out_dir: Path, quick: bool = False) -> dict:
    import tempfile

    from dodai.report import Report
    from dodai.tools.redteam import ALL_CASES, ATTACKS, BENIGN, PYTHON, Harness, summarize
    from dodai.viz import pyplot

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R7.5 Tool use: calculator, sandboxed Python, read-only SQL, search — red team")
    with tempfile.TemporaryDirectory(prefix="dodai-r7_5-") as work:
        h = Harness(Path(work), python_timeout_s=1.0, memory_mb=128, n_docs=300 if quick else None)
        outcomes = h.run_all(ALL_CASES)
        rows = summarize(outcomes)
        failed = [o for o in outcomes if not o.passed]

        ablation = None
        if not quick:
            from dodai.tools.python_sandbox import python_tool

            h.tools["python"] = python_tool(1.0, 128, audit_hook=False)
            ablation = []
            for case in [c for c in PYTHON if c.attack]:
                h.reset()
                strict = h.run(case)
                ablation.append((strict, h._judge(case, h.tools["python"], strict.result, strict.error,
                                                  strict.seconds, harm_only=True)))
            h.reset()
            h.tools["python"] = python_tool(1.0, 128)

        latency = None
        if not quick:  # benign calls with the default limits, repeated, for steadier medians
            from dodai.tools.python_sandbox import python_tool

            h.tools["python"] = python_tool()
            latency = {}
            for tool in ("calculator", "python", "sql", "search"):
                times = [h.run(c).seconds for _ in range(5) for c in BENIGN if c.tool == tool]
                latency[tool] = 1000 * statistics.median(times)

    n_att, n_ben = len(ATTACKS), len(BENIGN)
    blocked = sum(o.passed for o in outcomes if o.case.attack)
    false_blocks = sum(not o.passed for o in outcomes if not o.case.attack)
    rep.results.update({"attacks": n_att, "attacks_blocked": blocked, "blocked_rate": blocked / n_att,
                        "benign": n_ben, "false_blocks": false_blocks, "false_block_rate": false_blocks / n_ben,
                        "per_tool": rows, "failures": [{"tool": o.case.tool, "case": o.case.name, "why": o.why}
                                                       for o in failed]})
    rep.text(f"{n_att} named attacks and {n_ben} benign calls over four tools; after every call the host "
             "witnesses (canary file, a directory outside the sandbox, the database's SHA-256) are checked.")
    rep.heading("Blocked attacks, false blocks, latency")
    rep.table([{"tool": r["tool"], "attacks blocked": f"{r['blocked']}/{r['attacks']}",
                "blocked rate": r["blocked_rate"], "benign blocked": f"{r['false_blocks']}/{r['benign']}",
                "false-block rate": r["false_block_rate"], "median ms (benign)": r["median_ms_benign"],
                "median ms (all)": r["median_ms_all"]} for r in rows])
    if failed:
        rep.heading("Failures")
        rep.table([{"tool": o.case.tool, "case": o.case.name, "why": o.why[:150]} for o in failed])
    rep.heading("Example calls")
    rep.table(_example_rows(outcomes, EXAMPLES))

    if latency is not None:
        rep.heading("Latency with the default limits (benign calls × 5, median ms)")
        rep.table([{"tool": k, "median ms": v} for k, v in latency.items()])
        rep.results["latency_ms_default_limits"] = latency
    if ablation is not None:
        refused = [o.case.name for o, _ in ablation if o.passed]
        harmless = [o.case.name for o, harm in ablation if not harm]
        harmful = [(o.case.name, harm) for o, harm in ablation if harm]
        rep.heading("Ablation: the Python sandbox without its audit hook (the OS sandbox alone)")
        rep.text(f"Without the hook, {len(harmless)}/{len(ablation)} Python attacks still do no harm (host "
                 f"witnesses unchanged, nothing secret printed, time and output bounded), and "
                 f"{len(refused)}/{len(ablation)} still end in a visible refusal or limit. Harm that only the hook "
                 f"would prevent: {', '.join(n for n, _ in harmful) or 'none'}. The boundary is the kernel: "
                 "namespaces, a file system that does not contain the host, seccomp and rlimits.")
        rep.table([{"attack": o.case.name, "harmless without hook": not harm,
                    "refusal/limit shown without hook": o.passed,
                    "what happened": harm or " ".join(((o.error or o.result) or "").split())[-90:].replace("|", "\\|")}
                   for o, harm in ablation])
        rep.results["ablation_no_hook"] = {"attacks": len(ablation), "harmless": len(harmless),
                                           "refused_or_limited": len(refused), "harm_only_hook_prevents":
                                           [n for n, _ in harmful]}

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [r["tool"] for r in rows]
    x = range(len(names))
    ax1.bar([i - 0.2 for i in x], [r["blocked_rate"] for r in rows], 0.4, label="attacks blocked")
    ax1.bar([i + 0.2 for i in x], [r["false_block_rate"] for r in rows], 0.4, label="benign blocked")
    ax1.set_xticks(list(x), names)
    ax1.set_ylim(0, 1.05)
    ax1.set_title("red team: rates")
    ax1.legend(fontsize=8)
    ax2.bar(list(x), [max(r["median_ms_benign"], 1e-3) for r in rows])
    ax2.set_yscale("log")
    ax2.set_xticks(list(x), names)
    ax2.set_ylabel("median ms per benign call")
    ax2.set_title("latency")
    fig.tight_layout()
    fig.savefig(out_dir / "r7_5.png", dpi=110)
    plt.close(fig)
    rep.image("r7_5.png", "blocked-attack and false-block rates, and median latency, per tool")
    rep.write()

    if quick:
        assert blocked == n_att, f"attacks not blocked: {[(o.case.tool, o.case.name, o.why) for o in failed]}"
        assert false_blocks == 0, "benign calls blocked"
    return rep.results
