"""`tav-export --pack-for` shows its stages with their times, and --quiet silences them (issue 31)."""

import logging
import re

import pytest

from tav.export.cli import main as export_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _info_lines(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.name == "tav.export" and r.levelno == logging.INFO]


def test_pack_for_logs_each_stage_with_its_time_and_quiet_silences_them(random_runs, base_engine, tmp_path, caplog,
                                                                         capsys):
    caplog.set_level(logging.DEBUG, logger="tav.export")
    out = tmp_path / "shown.tavpack"
    export_main(["--weights", str(random_runs(0)), "--pack-for", str(base_engine), "--out", str(out)])
    lines = _info_lines(caplog)
    assert lines[0].startswith("pack of ") and lines[-1].startswith(f"done: {out} (")
    for name in ("load", "hash", "convert", "write"):
        assert any(re.match(rf"{name} +.*[0-9.]+s", line) for line in lines), (name, lines)
    assert capsys.readouterr().out.strip() == str(out)

    caplog.clear()
    export_main(["--weights", str(random_runs(0)), "--pack-for", str(base_engine), "--out",
                 str(tmp_path / "quiet.tavpack"), "--quiet"])
    assert [r for r in caplog.records if r.levelno < logging.WARNING] == []
