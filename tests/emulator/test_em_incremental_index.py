"""Incremental reads are served from an index: the query the emulator runs for the subscriber's
incremental page (filter, order and page by lastModifiedDateTime) walks
`ix_customers_modified` and never sorts the set (a 200k-row incremental pull took 77 s when
every page sorted the table; bench/bench_incremental.py measures the page times)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bcbridge.testing import InProcessEmulator


def test_an_incremental_page_walks_the_modified_index(emulator: InProcessEmulator) -> None:
    engine = emulator.app.service.engine
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "lastModifiedDateTime" in statement and "ORDER BY" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with emulator.http_client() as client:
            page = client.get(
                f"companies({emulator.info.company_id()})/customers",
                params={
                    "$filter": "lastModifiedDateTime ge 2000-01-01T00:00:00Z",
                    "$orderby": "lastModifiedDateTime asc",
                    "$top": "5",
                },
            )
        assert page.status_code == 200, page.text
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert seen, "no incremental query was run"
    statement, parameters = seen[-1]
    with engine.connect() as conn:
        plan = " | ".join(
            str(row[-1])
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )
    assert "ix_customers_modified" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort of the matching rows
