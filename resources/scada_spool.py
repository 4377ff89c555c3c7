"""Where the SCADA collector's spool lives, for the Dagster side that consumes its sealed windows."""

import dagster as dg


class ScadaSpool(dg.ConfigurableResource):
    """The collector's spool directory (``IHUB_SPOOL_DIR``, default ``<data dir>/spool``) and window length."""

    root: str
    window_s: int = 300
