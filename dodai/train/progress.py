"""Progress of a training run on stderr: a live bar on a terminal, a few plain lines in a log.

On a terminal (``stderr.isatty()``) a tqdm bar shows the step, loss, learning rate, rate and ETA. When
stderr is a file or a pipe (CI, ``nohup``, ``2> log``) a bar would write a carriage return per refresh —
thousands of them in the log — so instead one line is printed per ~10 % of the run (of its steps, or of
its time budget) and one per evaluation. ``enabled=False`` (``--quiet``) prints nothing.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``total``: steps, or seconds when ``by_time`` (a time-budgeted run)."""

    def __init__(self, total: float | None, desc: str = "train", enabled: bool = True, initial: float = 0,
                 by_time: bool = False, stream=None, lines: int = 10):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.by_time = total, desc, by_time
        self.enabled = enabled
        self.bar = None
        self.t0, self.n0 = time.perf_counter(), initial
        self.every = (total / lines) if total else None
        self.next_mark = ((initial // self.every) + 1) * self.every if self.every else None
        if not enabled:
            return
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=round(total, 1) if total else None, initial=initial, desc=desc, file=self.stream,
                            unit="s" if by_time else "step", dynamic_ncols=True,
                            bar_format=("{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
                                        if by_time else None))

    def update(self, step: int, position: float, info: dict) -> None:
        """After an optimizer step: ``position`` is the step count, or elapsed seconds when ``by_time``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in info.items()},
                                 refresh=False)
            self.bar.update(position - self.bar.n)
            return
        if self.next_mark is not None and position >= self.next_mark:
            while position >= self.next_mark:
                self.next_mark += self.every
            self._line(step, position, info)

    def _line(self, step: int, position: float, info: dict) -> None:
        el = time.perf_counter() - self.t0
        done = position - self.n0
        pct = f"{100 * position / self.total:.0f}%" if self.total else ""
        rate = done / el if el > 0 else 0.0
        eta = (self.total - position) / rate if (self.total and rate > 0) else None
        what = f"{position:.0f}/{self.total:.0f} s" if self.by_time else f"step {step}/{self.total or '?'}"
        parts = [f"{self.desc}: {what} {pct}".rstrip()]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()]
        if not self.by_time:
            parts.append(f"{rate:.3g} step/s")
        if eta is not None:
            parts.append(f"ETA {eta:.0f} s")
        print(", ".join(parts), file=self.stream, flush=True)

    def write(self, msg: str) -> None:
        """A line of its own (an evaluation's result), also under a live bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
