from datetime import UTC, datetime, timedelta

from contracts.dmama import DMAS, FLOW_READINGS
from quality.conform import conform

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW = (T0, T0 + timedelta(hours=1))


def row(minute: int, flow=100.0, dma="DMA-0001", pressure=2.5):
    return {
        "dma_id": dma,
        "timestamp": f"2026-03-01T00:{minute:02d}:00Z",
        "flow_m3h": flow,
        "pressure_bar": pressure,
    }


def test_good_rows_are_typed_and_sorted():
    loaded = conform(
        [row(15), row(0), {**row(30), "flow_m3h": "12.5"}],
        FLOW_READINGS,
        source="dmama",
        partition_key="p",
        window=WINDOW,
    )
    assert loaded.rejected == 0
    assert loaded.frame["timestamp"].to_list() == [T0, T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)]
    assert loaded.frame["flow_m3h"].to_list() == [100.0, 100.0, 12.5]


def test_every_bad_row_is_kept_with_field_reason_and_payload():
    rows = [
        row(0),
        row(15, flow="n/a"),
        {**row(30), "timestamp": "yesterday"},
        {**row(45), "timestamp": "2026-03-01T00:45:00"},  # no UTC offset
        {"timestamp": "2026-03-01T00:00:00Z", "flow_m3h": 1.0},  # no DMA
        row(0),  # duplicate of the first
        {**row(0), "timestamp": "2026-03-01T01:00:00Z"},  # outside the window
        "not an object",
        row(15, flow=True),
    ]
    loaded = conform(rows, FLOW_READINGS, source="dmama", partition_key="2026-03-01-00:00", window=WINDOW)
    assert loaded.received == 9
    assert loaded.written == 1
    assert loaded.rejected == 8
    assert loaded.received == loaded.written + loaded.rejected
    reasons = dict(zip(loaded.rejects["row_number"].to_list(), loaded.rejects["reason"].to_list(), strict=True))
    assert reasons[1] == "expected a number, got 'n/a'"
    assert reasons[2].startswith("expected an ISO 8601 timestamp")
    assert "no UTC offset" in reasons[3]
    assert reasons[4] == "required field is missing or null"
    assert reasons[5].startswith("duplicate of another row with the same (dma_id,timestamp)")
    assert "outside the requested window" in reasons[6]
    assert reasons[7] == "expected an object, got str"
    assert reasons[8] == "expected a number, got bool True"
    first = loaded.rejects.filter(loaded.rejects["row_number"] == 1).row(0, named=True)
    assert first["source"] == "dmama"
    assert first["field"] == "flow_m3h"
    assert first["partition_key"] == "2026-03-01-00:00"
    assert '"flow_m3h": "n/a"' in first["raw_payload"]
    assert first["partition_start"] == T0


def test_lists_dates_and_integers_of_a_catalogue():
    detail = {
        "dma_id": "DMA-0001",
        "name": "North",
        "zone": "Z1",
        "connections": 1200,
        "mains_length_km": 14.2,
        "target_pressure_bar": 2.5,
        "inflow_meter_ids": ["M-0001-0001"],
        "latitude": 13.7,
        "longitude": 100.5,
        "commissioned_on": "2019-04-01",
    }
    loaded = conform(
        [detail, {**detail, "dma_id": "DMA-0002", "connections": 12.5}],
        DMAS,
        source="dmama",
        partition_key="snapshot",
    )
    assert loaded.written == 1
    assert loaded.frame.row(0, named=True)["inflow_meter_ids"] == ["M-0001-0001"]
    assert loaded.rejects["reason"].to_list() == ["expected a whole number, got 12.5"]
