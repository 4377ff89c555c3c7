"""Where things live and which clock the utility keeps, from the environment with working defaults.

Every path is made absolute when the definitions load, so a run, a sensor and the analyst catalog
agree on them whatever directory they were started from.
"""

import os
from pathlib import Path

DEFAULT_LOCAL_TIMEZONE = "Asia/Bangkok"


def data_dir() -> Path:
    """``IHUB_DATA_DIR``, or ``.data`` under the current directory (what ``make demo`` uses)."""
    return Path(os.environ.get("IHUB_DATA_DIR", ".data")).resolve()


def lake_dir() -> Path:
    return Path(os.environ.get("IHUB_LAKE_DIR", data_dir() / "lake")).resolve()


def catalog_path() -> Path:
    return Path(os.environ.get("IHUB_CATALOG_PATH", data_dir() / "catalog" / "ihub.duckdb")).resolve()


def local_timezone() -> str:
    """The utility's time zone: schedules fire and reports read in it; storage stays UTC."""
    return os.environ.get("IHUB_LOCAL_TZ", DEFAULT_LOCAL_TIMEZONE)
