"""A decision asset run on its own refuses inputs whose latest blocking check failed, partition by partition."""

import dagster as dg
import pytest

from assets.upstream_checks import require_upstream_checks

DAYS = dg.DailyPartitionsDefinition(start_date="2026-12-01")


class Quality(dg.Config):
    bad_days: list[str] = []  # noqa: RUF012 (pydantic copies defaults)


@dg.asset(key=["demo", "levels"], partitions_def=DAYS)
def levels(context: dg.AssetExecutionContext) -> None:
    """Stands for an ingestion asset; its check reads the run config to pass or fail."""


@dg.asset_check(asset=levels, blocking=True, partitions_def=DAYS)
def levels_in_range(context: dg.AssetCheckExecutionContext, config: Quality) -> dg.AssetCheckResult:
    bad = context.partition_key in config.bad_days
    return dg.AssetCheckResult(passed=not bad, description="level above the tank's overflow" if bad else None)


@dg.asset_check(asset=levels, blocking=False, partitions_def=DAYS)
def levels_dense(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="non-blocking, never stops a plan")


@dg.asset(key=["demo", "plan"], partitions_def=DAYS, deps=[levels])
def plan(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    # `materialize` with a selection runs outside a code location: it names its inputs' checks itself.
    report = require_upstream_checks(
        context, [levels.key], [context.partition_key], checks=[levels_in_range, levels_dense]
    )
    return dg.MaterializeResult(metadata={"checks_passed": report.passed})


def _land(instance: dg.DagsterInstance, day: str, bad: bool) -> None:
    config = {"ops": {"demo__levels_levels_in_range": {"config": {"bad_days": [day] if bad else []}}}}
    result = dg.materialize(
        [levels, plan, levels_in_range, levels_dense],
        selection=dg.AssetSelection.assets(levels) | dg.AssetSelection.checks_for_assets(levels),
        partition_key=day,
        instance=instance,
        run_config=config,
        raise_on_error=False,
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"levels_in_range": not bad, "levels_dense": False}


def _plan(instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [levels, plan, levels_in_range, levels_dense],
        selection=[plan],
        partition_key=day,
        instance=instance,
        raise_on_error=False,
    )


def test_a_failed_blocking_check_stops_the_plan_until_the_partition_is_landed_clean():
    with dg.instance_for_test() as instance:
        _land(instance, "2026-12-02", bad=True)
        _land(instance, "2026-12-03", bad=False)

        refused = _plan(instance, "2026-12-02")
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_step_failure)
        message = failure.step_failure_data.error.message
        assert "demo/levels:levels_in_range (partition 2026-12-02)" in message
        assert "level above the tank's overflow" in message
        assert "levels_dense" not in message  # non-blocking checks never stop a plan

        other_day = _plan(instance, "2026-12-03")  # a bad day does not stop plans on other days
        assert other_day.success
        assert other_day.asset_materializations_for_node("demo__plan")[0].metadata["checks_passed"].value == 1

        _land(instance, "2026-12-02", bad=False)  # re-landed clean: its latest check passed
        assert _plan(instance, "2026-12-02").success


def test_a_check_that_never_ran_is_reported_not_blocking():
    with dg.instance_for_test() as instance:
        dg.materialize([levels], partition_key="2026-12-01", instance=instance)  # no checks in this run
        result = _plan(instance, "2026-12-01")
        assert result.success
        assert result.asset_materializations_for_node("demo__plan")[0].metadata["checks_passed"].value == 0


@pytest.mark.parametrize("partitions", [None])
def test_without_partitions_the_latest_execution_counts(partitions):
    with dg.instance_for_test() as instance:
        _land(instance, "2026-12-02", bad=False)
        _land(instance, "2026-12-03", bad=True)  # the latest execution of all

        @dg.asset(key=["demo", "weekly_plan"], deps=[levels])
        def weekly_plan(context: dg.AssetExecutionContext) -> None:
            require_upstream_checks(context, [levels.key], partitions, checks=[levels_in_range])

        result = dg.materialize(
            [levels, weekly_plan, levels_in_range, levels_dense],
            selection=[weekly_plan],
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
