"""What a run tells the world: the JSONL log and the progress line on stderr."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


class JsonlLog:
    """Append one JSON object per line to ``path`` (flushed per line, so ``tail -f`` works)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._handle.write(json.dumps(clean, sort_keys=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def format_line(step: int, total: int, m: dict[str, Any]) -> str:
    """``step 120/1000 loss 1.234 bpp 0.312 PSNR 24.1 ...`` from a train log record."""
    parts = [f"step {step}/{total}", f"loss {m['loss']:.4g}"]
    if "bpp" in m:
        parts.append(f"bpp {m['bpp']:.3f} (q {m['q_bpp']:.3f})")
    parts.append(f"PSNR {m['psnr']:.2f}")
    if "realism" in m:
        parts.append(f"realism {m['realism']:.2f}")
    if "grid" in m:
        parts.append(f"grid {m['grid']:.2f}")
    if m.get("perceptual") is not None:
        parts.append(f"lpips {m['perceptual']:.4f}")
    if m.get("d_loss") is not None:
        parts.append(f"D {m['d_loss']:.3f} G {m['g_loss']:.3f}")
    parts.append(f"lr {m['lr']:.1e}")
    parts.append(f"{m['step_time']:.2f} s/step")
    return "  ".join(parts)


class ProgressLine:
    """A rich progress bar with the key numbers on a terminal; plain lines every ``every_s`` otherwise."""

    def __init__(self, total: int, start: int, *, enabled: bool = True, every_s: float = 30.0) -> None:
        self.total = total
        self.enabled = enabled
        self.every_s = every_s
        self._last_plain = 0.0
        self._progress = None
        self._task = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from hificli.cli.common import stderr_console

            self._progress = Progress(
                BarColumn(bar_width=20), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                console=stderr_console(), refresh_per_second=2, transient=False,
            )
            self._task = self._progress.add_task("starting", total=total, completed=start)
            self._progress.start()

    def update(self, step: int, record: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        text = format_line(step, self.total, record) if record else None
        if self._progress is not None:
            kwargs = {"description": text.split("  ", 1)[1]} if text else {}
            self._progress.update(self._task, completed=step, **kwargs)
        elif text and (time.monotonic() - self._last_plain >= self.every_s or step >= self.total):
            self._last_plain = time.monotonic()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def message(self, text: str) -> None:
        """A line above the bar (validation results, checkpoints)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
