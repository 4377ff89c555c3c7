from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from contracts.dmama import DMAS, FLOW_READINGS
from quality.conform import conform
from resources.tables import Column, LakeTable, is_safe_identifier

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


ZONES = LakeTable(
    layer="raw",
    name="gis_zones",
    description="Zones with their outline, price and sample days.",
    columns=(
        Column("zone_id", pl.String(), "Zone.", nullable=False, identifier=True),
        Column("price_thb", pl.Decimal(10, 4), "Price per m³, THB."),
        Column("outline", pl.Binary(), "Outline.", geometry=True, crs="EPSG:32647"),
        Column("token", pl.Binary(), "Opaque token.", binary_encoding="base64"),
        Column("sampled_on", pl.List(pl.Date()), "Days sampled."),
        Column("prices", pl.List(pl.Decimal(6, 2)), "Past prices, THB."),
        Column("households", pl.Int32(), "Households."),
        Column("level", pl.Float32(), "Level."),
    ),
    key=("zone_id",),
)
POINT_WKB = "0101000000000000000000f03f0000000000000040"  # POINT(1 2), little-endian


def zone(zone_id: str, **values):
    return {"zone_id": zone_id, "price_thb": "12.3456", "outline": POINT_WKB, "households": 12, **values}


def test_every_registered_type_is_parsed_exactly():
    loaded = conform(
        [
            zone(
                "Z-1",
                token="AP8=",
                sampled_on=["2026-03-01", "2026-03-02"],
                prices=["1.10", 2.25, 3],
                level=1.5,
            ),
            zone("Z-2", price_thb=0.1, outline="\\x" + POINT_WKB),
        ],
        ZONES,
        source="gis",
        partition_key="snapshot",
    )
    assert loaded.rejected == 0
    first, second = loaded.frame.rows(named=True)
    assert str(first["price_thb"]) == "12.3456"
    assert str(second["price_thb"]) == "0.1000"  # from the float 0.1, without 0.1000000000000000055…
    assert first["outline"] == bytes.fromhex(POINT_WKB) == second["outline"]
    assert first["token"] == b"\x00\xff"
    assert first["sampled_on"] == [date(2026, 3, 1), date(2026, 3, 2)]
    assert [str(p) for p in first["prices"]] == ["1.10", "2.25", "3.00"]
    assert loaded.frame.schema == ZONES.schema


def test_values_the_lake_cannot_represent_are_rejected_with_the_range():
    rows = [
        zone("Z-1", households=2**31),
        zone("Z-2", price_thb="1234567.1"),  # 7 integer digits: decimal(10, 4) holds 6
        zone("Z-3", price_thb="1.23456"),
        zone("Z-4", outline="zz"),
        zone("Z-5", outline="ff01"),  # not WKB
        zone("Z-6", token="not base64!"),
        zone("Z-7", sampled_on=["2026-03-01", "March"]),
        zone("Z-8", level=1e39),
        zone("Z-9", households=2**70),
        zone("Z-10", prices="1.00"),
    ]
    loaded = conform(rows, ZONES, source="gis", partition_key="snapshot")
    assert loaded.written == 0
    reasons = dict(zip(loaded.rejects["row_number"].to_list(), loaded.rejects["reason"].to_list(), strict=True))
    assert reasons[0] == "2147483648 is outside the Int32 range [-2147483648, 2147483647]"
    assert reasons[1] == "1234567.1 needs more than 10 digits (decimal(10, 4))"
    assert reasons[2] == "1.23456 has more than 4 decimal places (decimal(10, 4))"
    assert reasons[3] == "expected hexadecimal bytes, got 'zz'"
    assert reasons[4].startswith("expected WKB geometry")
    assert reasons[5] == "expected base64 bytes, got 'not base64!'"
    assert reasons[6] == "element 1: expected a date YYYY-MM-DD, got 'March'"
    assert reasons[7].endswith("is outside the Float32 range ±3.403e+38")
    assert reasons[8].startswith("1180591620717411303424 is outside the Int32 range")
    assert reasons[9] == "expected a list, got str '1.00'"
    fields = loaded.rejects["field"].to_list()
    assert fields[:3] == ["households", "price_thb", "price_thb"]


def test_timestamps_outside_the_representable_range_are_rejects_not_crashes():
    rows = [
        row(0),
        {**row(15), "timestamp": "+12000-01-01T00:00:00Z"},
        {**row(30), "timestamp": "10000-01-01T00:00:00Z"},
        {**row(45), "timestamp": "-0001-01-01T00:00:00Z"},
    ]
    loaded = conform(rows, FLOW_READINGS, source="dmama", partition_key="p", window=WINDOW)
    assert loaded.written == 1
    reasons = loaded.rejects["reason"].to_list()
    assert all("outside the representable range [0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z]" in r for r in reasons)
    assert "'+12000-01-01T00:00:00Z'" in reasons[0]
    assert loaded.rejects["field"].to_list() == ["timestamp"] * 3
    assert loaded.rejects["partition_start"].to_list() == [T0] * 3  # filed under the window asked for


@pytest.mark.parametrize(
    "bad", [".", "..", "a/b", "a\\b", "a?b", "a#b", "a%2e", "a b", "a\tb", "a\x00b", "", "x" * 201]
)
def test_unsafe_identifiers_are_rejected(bad):
    assert not is_safe_identifier(bad)
    loaded = conform([zone(bad), zone("Z.1")], ZONES, source="gis", partition_key="snapshot")
    assert loaded.frame["zone_id"].to_list() == ["Z.1"]
    assert loaded.rejects["field"].to_list() == ["zone_id"]
    assert loaded.rejects["reason"][0].startswith("identifier")


def test_safe_identifiers_pass():
    assert all(is_safe_identifier(v) for v in ["DMA-0001", "M-0001-0001", "plant:7", "a.b", "ท่าน้ำ"])
    assert not is_safe_identifier(None) and not is_safe_identifier(7)


def test_rejects_are_filed_under_the_partition_that_holds_them():
    monthly = dg.MonthlyPartitionsDefinition(start_date="2026-01-01")
    months = [monthly.time_window_for_partition_key(k) for k in ("2026-02-01", "2026-03-01")]
    rows = [
        {**row(0), "timestamp": "2026-03-15T10:00:00Z", "flow_m3h": "n/a"},
        {**row(0), "timestamp": "2026-02-20T10:00:00Z", "flow_m3h": "n/a"},
        {**row(0), "timestamp": "garbage"},
    ]
    loaded = conform(rows, FLOW_READINGS, source="dmama", partition_key="p", partitions=months)
    march, february = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert loaded.rejects["partition_start"].to_list() == [march, february, february]


def test_the_vectorized_path_and_the_per_value_parsers_agree():
    """A clean answer is typed in one step; one value needing a look sends the column through the per-value
    parsers. Both must give the same rows."""
    stamps = [f"2026-03-01T00:{15 * i:02d}:00Z" for i in range(4)]
    clean = [
        {"dma_id": f"DMA-{i:04d}", "timestamp": t, "flow_m3h": 10.0 + i, "pressure_bar": 2 + i}
        for i, t in enumerate(stamps)
    ]
    # The same values, one of them sent as text (which only the per-value parser reads).
    mixed = [dict(row) for row in clean]
    mixed[2]["flow_m3h"] = "12.0"
    mixed[3]["pressure_bar"] = "5"
    window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, 1, tzinfo=UTC))
    fast = conform(clean, FLOW_READINGS, source="dmama", partition_key="p", window=window)
    slow = conform(mixed, FLOW_READINGS, source="dmama", partition_key="p", window=window)
    assert fast.rejected == slow.rejected == 0
    assert fast.frame.equals(slow.frame)
    assert fast.frame["pressure_bar"].dtype == pl.Float64
