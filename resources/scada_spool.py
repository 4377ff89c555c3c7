"""The SCADA windows the collector publishes, as the Dagster side sees them: through the hand-off contract.

``ScadaWindows`` lists the windows waiting to be loaded, reads one (checksums verified) and
acknowledges it, all through ``resources.scada_manifest``; it knows nothing of how the collector writes or
seals, and it has no window length of its own: each window's length comes from its manifest. A worker
on another machine needs read access to ``sealed/`` and ``archive/`` and write access to ``acks/`` of
``root``, never a read-write mount of the collector's spool as a whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from collector.points import Point
    from resources.scada_manifest import WindowManifest


class ScadaWindows(dg.ConfigurableResource):
    """Where the collector publishes sealed windows (``IHUB_SPOOL_DIR``, default ``<data dir>/spool``)."""

    root: str

    def pending(self) -> list[str]:
        """Published windows no run has acknowledged yet, oldest first."""
        return self._directory().pending()

    def manifest(self, name: str) -> WindowManifest:
        """The manifest of window ``name``, sealed or archived."""
        return self._directory().manifest(name)

    def available(self, start: datetime, end: datetime, acknowledged_only: bool = False) -> list[WindowManifest]:
        """Manifests of the windows starting in ``[start, end)``; ``acknowledged_only``: those already loaded."""
        return self._directory().available(start, end, acknowledged_only)

    def read(self, name: str) -> tuple[WindowManifest, list[Point]]:
        """The window's manifest and points; ``ChecksumError`` naming window and segment on a mismatch."""
        return self._directory().read(name)

    def acknowledge(self, name: str, by: str, points: int) -> None:
        """Tell the collector window ``name`` is safely in the lake; it archives the window itself."""
        self._directory().acknowledge(name, by, points)

    def _directory(self):
        from resources.scada_manifest import WindowDirectory

        return WindowDirectory(self.root)
