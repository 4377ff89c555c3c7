"""Run monitoring: a run whose worker died is marked failed by the daemon, and a live one is left alone."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml
from dagster._core.launcher import WorkerStatus

from ihub.environment import REPO_ROOT, write_instance_config
from orchestration.run_launcher import WORKER_HOST_TAG, MonitoredRunLauncher, _process_health

BIN = Path(sys.executable).parent
ZOMBIE_PARTITION = "2026-03-02-19:00"
HEALTHY_PARTITION = "2026-03-02-20:00"
POLL_S = 2
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def test_the_instance_template_uses_the_monitoring_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_config(tmp_path, {})
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, MonitoredRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled


def test_a_live_process_that_started_before_the_run_is_its_worker():
    result = _process_health(os.getpid(), "here", run_started_at=time.time())
    assert (result.status, result.run_worker_id) == (WorkerStatus.RUNNING, str(os.getpid()))


def test_an_exited_worker_and_a_reused_pid_both_count_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = _process_health(child.pid, "here", run_started_at=time.time() - 5)
    assert gone.status == WorkerStatus.FAILED
    assert f"run worker (pid {child.pid} on here) is gone" in gone.msg
    # This process started well after a run that began an hour ago: its pid cannot be that run's worker.
    reused = _process_health(os.getpid(), "here", run_started_at=psutil.Process().create_time() - 3600)
    assert reused.status == WorkerStatus.FAILED
    assert "now belongs to a process started 3600 s after the run started" in reused.msg


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_daemon_fails_a_run_whose_worker_died_and_leaves_a_live_one_alone(tmp_path, monkeypatch):
    """Kill -9 a run worker together with its code server, as a crash of the machine's Dagster processes
    would: nobody is left to report that run's end but the daemon's run monitoring. The other run's worker
    survives its code server, and must still end in SUCCESS."""
    from contracts.dmama import FLOW_READINGS_KEY
    from simulators.dmama import DmamaConfig, credentials_env, serve_dmama

    home = tmp_path / "dagster"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "IHUB_DATA_DIR": str(tmp_path / "data")}
    for key in ("DAGSTER_PG_URL", "DAGSTER_PG_HOST", "IHUB_LAKE_DIR", "IHUB_CATALOG_PATH", "IHUB_ALERT_WEBHOOK_URL"):
        env.pop(key, None)
    config_file = write_instance_config(home, env)
    config = yaml.safe_load(config_file.read_text())
    config["run_monitoring"]["poll_interval_seconds"] = POLL_S
    config_file.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    processes: list[subprocess.Popen] = []
    # The instance (and its storage) is opened first, so the daemon and the CLI do not race to create it.
    with serve_dmama(DmamaConfig()) as server, dg.DagsterInstance.from_config(str(home)) as instance:
        env.update(credentials_env(server.url, server.config))
        # Every readings request answers after 4 s: each run stays alive across the kill and the next poll.
        server.simulator.inject("slow", path="/api/dma/*/readings", count=1000, delay_s=4)
        daemon_log = tmp_path / "daemon.log"
        try:
            processes.append(_start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, daemon_log))
            zombie, healthy = str(uuid.uuid4()), str(uuid.uuid4())
            # The healthy run executes its steps in its worker (the in-process executor), saving the step
            # processes' start-up on a busy machine; what is judged is the worker, the same either way.
            launches = [
                _start(_launch_command(zombie, ZOMBIE_PARTITION), env, tmp_path / "launch-zombie.log"),
                _start(_launch_command(healthy, HEALTHY_PARTITION, IN_PROCESS), env, tmp_path / "launch-healthy.log"),
            ]
            processes.extend(launches)
            for launch in launches:
                assert launch.wait(timeout=60) == 0, _tail(*tmp_path.glob("launch-*.log"))

            _wait_for(instance, [zombie, healthy], {dg.DagsterRunStatus.STARTED}, 60, daemon_log)
            zombie_pid, healthy_pid = _worker_pid(instance, zombie), _worker_pid(instance, healthy)
            code_server = psutil.Process(zombie_pid).ppid()
            assert psutil.Process(healthy_pid).ppid() == code_server, "both runs should share the daemon's code server"
            assert instance.get_run_by_id(zombie).tags[WORKER_HOST_TAG] == socket.gethostname()

            os.kill(code_server, signal.SIGKILL)
            os.kill(zombie_pid, signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()

            _wait_for(instance, [zombie], {dg.DagsterRunStatus.FAILURE}, 5 * POLL_S + 10, daemon_log)
            failed_after = time.monotonic() - killed_at
            _wait_for(instance, [healthy], {dg.DagsterRunStatus.SUCCESS}, 60, daemon_log)
        finally:
            for process in processes:
                _stop(process)

        print(f"zombie run marked FAILED {failed_after:.1f} s after kill -9 (poll interval {POLL_S} s)")
        failure = instance.get_records_for_run(zombie, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert len(failure) == 1
        assert f"run worker (pid {zombie_pid} on {socket.gethostname()}) is gone" in failure[0].event_log_entry.message

        # The healthy worker, orphaned by the kill, was checked while it ran, judged alive, and finished.
        assert _checked_since(daemon_log, healthy, killed_wall) >= 1, _tail(daemon_log)
        assert not instance.get_records_for_run(healthy, of_type=dg.DagsterEventType.RUN_FAILURE).records
        done = instance.fetch_materializations(FLOW_READINGS_KEY, limit=10).records
        rows = {
            r.partition_key: r.asset_materialization.metadata["rows_written"].value for r in done if r.run_id == healthy
        }
        expected = server.simulator.expected_flow_rows("2026-03-02T20:00Z", "2026-03-02T21:00Z")
        assert rows == {HEALTHY_PARTITION: expected}


def _launch_command(run_id: str, partition: str, run_config: dict | None = None) -> list[str]:
    """``dagster job launch`` submits the run to the instance's queue; the daemon launches it."""
    config = ["--config-json", json.dumps(run_config)] if run_config else []
    return [
        str(BIN / "dagster"),
        "job",
        "launch",
        "-w",
        "workspace.yaml",
        "-j",
        "dmama_readings_job",
        "--run-id",
        run_id,
        "--tags",
        json.dumps({"dagster/partition": partition}),
        *config,
    ]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # A session of its own, so stopping it also stops the code servers and run workers it started.
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    # Whatever is left of the session (the daemon's code server, orphaned step processes) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=15)


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    started = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START).records
    pid = started[0].event_log_entry.dagster_event.pid
    assert pid is not None, f"run {run_id}: RUN_START event carries no pid"
    return pid


def _wait_for(
    instance: dg.DagsterInstance, run_ids: list[str], statuses: set[dg.DagsterRunStatus], timeout_s: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in run_ids}
        seen = {run_id: run.status if run else None for run_id, run in runs.items()}
        if all(status in statuses for status in seen.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"runs not {sorted(s.value for s in statuses)} within {timeout_s} s: {seen}\n{_tail(log)}")
        time.sleep(0.25)


def _checked_since(log: Path, run_id: str, since: float) -> int:
    """How many times the daemon's run monitoring logged checking ``run_id`` at or after ``since``."""
    stamp = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})")
    checks = 0
    for line in log.read_text().splitlines():
        found = stamp.search(line)
        if found and f"Checking run {run_id}" in line:
            at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S %z").timestamp()
            checks += at >= int(since)  # the log keeps whole seconds
    return checks


def _tail(*logs: Path) -> str:
    return "\n".join(f"--- {log.name}\n" + log.read_text()[-3000:] for log in logs if log.exists())
