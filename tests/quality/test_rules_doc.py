"""docs/quality.md is what the declared checks say: a rule added without regenerating the page fails here."""

from orchestration.definitions import defs
from quality.rules_doc import PAGE, render


def test_the_quality_page_matches_the_declared_checks():
    expected = render(defs)
    assert PAGE.read_text() == expected, "docs/quality.md is stale: run `python -m quality.rules_doc`"


def test_the_page_lists_every_check_with_its_severity():
    page = render(defs)
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        assert f"| `{key.asset_key.to_user_string()}` | `{key.name}` |" in page
    # A GX rule carries its declared severity; the DMAMA completeness rule is a warning, not a blocker.
    assert "| `dmama/flow_readings` | `complete` | no | WARN |" in page
    assert "| `dmama/flow_readings` | `values_in_physical_range` | yes | ERROR |" in page
