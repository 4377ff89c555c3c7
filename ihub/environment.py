"""Setting up the process environment the way `make demo`, `make ui` and the tests expect it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def prepare_dagster_home(data_dir: Path | None = None) -> Path:
    """Point ``DAGSTER_HOME`` at ``<data dir>/dagster`` (unless set) and put our dagster.yaml there."""
    data_dir = (data_dir or Path(os.environ.get("IHUB_DATA_DIR", ".data"))).resolve()
    os.environ.setdefault("IHUB_DATA_DIR", str(data_dir))
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    source = REPO_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return home
