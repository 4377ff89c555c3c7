"""A failed run reaches operators through the notifier: job, partition, failing step and why."""

import json

import dagster as dg

from orchestration.definitions import defs
from orchestration.operations import run_failure_to_operators
from resources.notifier import Notifier, NotifierChannel
from tests.collector.test_notifier import Receiver

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@dg.asset(key=["demo", "tank_levels"], partitions_def=DAYS)
def tank_levels(context: dg.AssetExecutionContext) -> None:
    raise dg.Failure(description="historian: no level readings for tank T1 between 00:00 and 06:00 UTC")


def test_a_failed_partition_run_is_sent_to_the_operators_channel(tmp_path):
    with dg.instance_for_test() as instance, Receiver() as receiver:
        result = dg.materialize([tank_levels], partition_key="2026-11-30", instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        notifier = Notifier(
            channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hooks/ops")], record_dir=str(tmp_path)
        )
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_to_operators",
            dagster_event=failure.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
            resources={"notifier": notifier},
        ) as context:
            run_failure_to_operators(context.for_run_failure())

        (request,) = receiver.wait_for(1)
        body = request["json"]
        assert body["severity"] == "warning"
        assert body["source"] == "dagster"
        assert body["title"] == "Run of __ephemeral_asset_job__ (partition 2026-11-30) failed"
        assert "demo__tank_levels: " in body["message"]
        assert "no level readings for tank T1 between 00:00 and 06:00 UTC" in body["message"]
        assert result.run_id[:8] in body["message"]
        (record,) = [json.loads(line) for line in notifier.record_path().read_text().splitlines()]
        assert record["delivered"] is True


def test_the_hub_runs_the_failure_sensor_by_default():
    sensor = defs.resolve_sensor_def("run_failure_to_operators")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "notifier" in sensor.required_resource_keys
