"""The docs' result tables are the experiments' summaries, not hand copies."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts/results_tables.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_committed_pages_match_their_summaries():
    result = run("--check")
    assert result.returncode == 0, result.stderr
    page = (REPO / "scripts/results/README.md").read_text()
    assert page.count("<!-- table: ") >= 3


def test_a_hand_edited_table_is_caught_and_refilled(tmp_path):
    (tmp_path / "s.md").write_text("Command: x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- table: s.md -->\n| a | b |\n|---|---|\n| 1 | 3 |\n"
                    "<!-- /table -->\noutro\n")
    assert run("--check", str(page)).returncode == 1
    assert run(str(page)).returncode == 0
    assert page.read_text() == ("intro\n<!-- table: s.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                                "<!-- /table -->\noutro\n")
    assert run("--check", str(page)).returncode == 0


def test_a_missing_summary_is_an_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- table: nope.md -->\n<!-- /table -->\n")
    result = run(str(page))
    assert result.returncode == 1
    assert "nope.md: cannot read" in result.stderr


def test_options_pick_a_table_and_filter_its_rows(tmp_path):
    (tmp_path / "s.md").write_text("x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\ny\n\n"
                                   "| c | d |\n|---|---|\n| keep 1 | 3 |\n| drop | 4 |\n"
                                   "| keep 2 | 5 |\n")
    page = tmp_path / "page.md"
    page.write_text("<!-- table: s.md table=2 rows=keep|none -->\n<!-- /table -->\n"
                    "<!-- table: s.md -->\n<!-- /table -->\n")
    assert run(str(page)).returncode == 0
    assert page.read_text() == (
        "<!-- table: s.md table=2 rows=keep|none -->\n| c | d |\n|---|---|\n| keep 1 | 3 |\n"
        "| keep 2 | 5 |\n<!-- /table -->\n"
        "<!-- table: s.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /table -->\n")
    page.write_text("<!-- table: s.md table=3 -->\n<!-- /table -->\n")
    result = run(str(page))
    assert result.returncode == 1 and "has 2 table(s), not a table 3" in result.stderr
