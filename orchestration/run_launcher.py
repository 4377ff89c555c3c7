"""Dagster's default run launcher, with a run worker health check so the daemon can fail dead runs.

Dagster's ``DefaultRunLauncher`` starts each run in a process of the code server and cannot tell the
daemon's run monitoring whether that process still lives. The code server notices a run worker that dies
under it, but when the code server dies too (its process tree killed, the machine or container
restarted, the out-of-memory killer), nobody is left to report the run's end and it stays STARTED until
``max_runtime_seconds`` (six hours here). This launcher answers the daemon's health check from the
process table: the worker's pid is the one on the run's RUN_START event, and the worker's host is
recorded on the run at launch. A worker checked from its own host that is gone, or whose pid now belongs
to a younger process, fails the run at the next monitoring poll (``run_monitoring.poll_interval_seconds``).

Built on Dagster's public extension points (``dagster.DefaultRunLauncher``, the ``run_launcher`` block of
``dagster.yaml``, the launcher's ``check_run_worker_health`` hook). Two private parts are used, because
Dagster exports nothing public for them: ``CheckRunHealthResult`` and ``WorkerStatus`` from
``dagster._core.launcher`` (the hook's return type), and the ``.dagster/grpc_info`` run tag that
``DefaultRunLauncher`` writes (read once per launch, to learn where the code server runs).

Loaded by every Dagster process that reads ``dagster.yaml`` (daemon, webserver, code servers, run
workers), so this module imports only Dagster, psutil and the standard library.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import TYPE_CHECKING

import dagster as dg
import psutil

# Private: Dagster exports no public name for a health check's answer (see the module docstring).
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

if TYPE_CHECKING:
    from dagster._core.launcher import LaunchRunContext

WORKER_HOST_TAG = "ihub/run_worker_host"
"""The host the run worker runs on, tagged at launch (shown with the run in the UI)."""

# Where DefaultRunLauncher records the code server it started the run on (its own tag, read only here):
# the run worker is a child process of that server.
_GRPC_INFO_TAG = ".dagster/grpc_info"

# A run worker exists before it reports RUN_START; allow for the coarse clock of process start times.
_START_TIME_SLACK_S = 1.0


class MonitoredRunLauncher(dg.DefaultRunLauncher):
    """Launch runs as ``DefaultRunLauncher`` does, and tell the daemon whether each run's worker lives.

    Configured in ``dagster.yaml``::

        run_launcher:
          module: orchestration.run_launcher
          class: MonitoredRunLauncher

    A worker is only judged from its own host: a code server reached on loopback or a Unix socket runs
    its workers on the launching host (and shares its process table); a remote one's runs are reported
    RUNNING and left to ``max_runtime_seconds``, as before. So are runs this launcher did not start
    (``dagster asset materialize`` and ``materialize()`` run in the calling process, with no host tag).
    """

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        run = self._instance.get_run_by_id(context.dagster_run.run_id)
        if run is not None:
            self._instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: _worker_host(run.tags.get(_GRPC_INFO_TAG))})

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        here = socket.gethostname()
        host = run.tags.get(WORKER_HOST_TAG)
        if host is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched by MonitoredRunLauncher; not checked")
        if host != here:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker on {host}, checked from {here}; not checked")
        latest = self._instance.get_run_by_id(run.run_id)
        if latest is not None and latest.is_finished:
            return CheckRunHealthResult(
                WorkerStatus.SUCCESS if latest.status == dg.DagsterRunStatus.SUCCESS else WorkerStatus.FAILED,
                f"run already {latest.status.value}",
            )
        started = self._instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1)
        if not started.records or started.records[0].event_log_entry.dagster_event is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet; not checked")
        entry = started.records[0].event_log_entry
        pid = entry.dagster_event.pid
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "RUN_START event carries no pid; not checked")
        return _process_health(pid, host, entry.timestamp)


def _worker_host(grpc_info: str | None) -> str:
    """The run worker's host, from the code server address DefaultRunLauncher recorded on the run."""
    here = socket.gethostname()
    try:
        info = json.loads(grpc_info) if grpc_info else {}
    except ValueError:
        return "unknown"
    if info.get("socket"):
        return here
    host = str(info.get("host") or "")
    if host == "localhost":
        return here
    try:
        return here if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host or "unknown"


def _process_health(pid: int, host: str, run_started_at: float) -> CheckRunHealthResult:
    worker = f"run worker (pid {pid} on {host})"
    try:
        process = psutil.Process(pid)
        created_at = process.create_time()
        status = process.status()
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"{worker} is gone: it died without reporting the run's end (killed, crashed, or its host restarted)",
            run_worker_id=str(pid),
        )
    except psutil.AccessDenied:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"{worker} exists but cannot be inspected; assumed alive")
    if created_at > run_started_at + _START_TIME_SLACK_S:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"{worker} is gone: pid {pid} now belongs to a process started {created_at - run_started_at:.0f} s "
            "after the run started",
            run_worker_id=str(pid),
        )
    if status == psutil.STATUS_ZOMBIE:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"{worker} is gone: it exited (a zombie process) without reporting the run's end",
            run_worker_id=str(pid),
        )
    return CheckRunHealthResult(WorkerStatus.RUNNING, f"{worker} is alive", run_worker_id=str(pid))
