import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_table_from_output_dirs(tmp_path):
    for run, ap in (("a", 10.0), ("b", 20.5)):
        folder = tmp_path / run / "inference" / "val"
        folder.mkdir(parents=True)
        metrics = {f"segm/{k}": ap for k in ("AP", "APr", "APc", "APf")}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "compare_results.py"),
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--markdown",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "segm APr" in lines[0]
    assert "10.0" in lines[2] and "20.5" in lines[3]
    missing = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "compare_results.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "no inference" in missing.stderr
