"""The dashboard stands without the CLI: what both front ends show of a flow and a task
(bcbridge.reports) is imported from neither of them."""

from __future__ import annotations

import subprocess
import sys


def test_the_dashboard_imports_nothing_of_the_cli_package() -> None:
    # a fresh interpreter: this one has imported the CLI already (other tests, the plugin)
    code = (
        "import sys, bcbridge.dashboard, bcbridge.dashboard.config_pages;"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['bcbridge', 'cli']))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]", found
