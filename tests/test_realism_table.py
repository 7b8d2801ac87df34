"""benchmarks/realism_table.py on a hand-made report: ST-LPIPS against AVIF at equal bpp and the rate of a
second model at the same -q against the faithful one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "realism_table.py"


def point(codec: str, setting: float, bpp: float, lpips: float) -> dict:
    return {"codec": codec, "setting": setting, "bpp": bpp, "lpips": lpips, "psnr-rgb": 30.0, "ms-ssim": 0.95}


def image(name: str, ratio: float) -> dict:
    """Faithful model at 0.1 / 0.2 bpp (-q 0 / 50); the second model ``ratio / 1.1`` and ``ratio * 1.1``
    times larger there (geometric mean ``ratio``) with half AVIF's ST-LPIPS; its default point repeats
    -q 50, which must not count twice."""
    faithful = [point("F", 0, 0.1, 0.2), point("F", 50, 0.2, 0.1)]
    second = [point("P", 0, 0.1 * ratio / 1.1, 0.05), point("P", 50, 0.2 * ratio * 1.1, 0.05)]
    avif = [point("avif", q, bpp, 0.1) for q, bpp in ((10, 0.05), (50, 0.5))]
    return {"name": name, "hific": {"P": second[1]}, "curves": {"F": faithful, "P": second}, "sweeps": {"avif": avif}}


def test_table_reports_lpips_against_avif_and_the_rate_at_the_same_quality(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"per_image": [image("a", 1.2), image("b", 1.5), image("c", 1.25)]}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), "F", "P"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 images. Median ST-LPIPS vs AVIF: -50.0 %" in done.stdout
    assert "Rate at the same -q against F: median x1.250 (x1.200-x1.500) over 3 images" in done.stdout
