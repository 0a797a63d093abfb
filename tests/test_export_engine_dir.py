"""The ENGINE_DIR swap: what appeared at --out while an export ran is never deleted."""

import pytest

from tav.export.engine_dir import check_output, make_staging, move_into_place
from tav.export.errors import ExportError


def _finished_staging(out_dir):
    staging = make_staging(out_dir)
    (staging / "manifest.json").write_text("{}")
    return staging


@pytest.mark.parametrize("overwrite", [False, True])
def test_files_that_appear_at_out_during_the_export_are_kept(tmp_path, overwrite):
    out = tmp_path / "engine"
    check_output(out, overwrite)  # the check at the start passes: nothing there yet
    staging = _finished_staging(out)
    out.mkdir()
    (out / "precious.txt").write_text("user data")  # appears while the export runs
    with pytest.raises(ExportError, match="not empty|not only an ENGINE_DIR"):
        move_into_place(staging, out, overwrite)
    assert (out / "precious.txt").read_text() == "user data"


def test_overwrite_replaces_an_existing_engine_dir(tmp_path):
    out = tmp_path / "engine"
    out.mkdir()
    (out / "manifest.json").write_text('{"schema_version": 1, "graphs": {"unet": {"onnx": "unet.onnx"}}, "files": {}}')
    (out / "unet.onnx").write_bytes(b"old graph")
    move_into_place(_finished_staging(out), out, overwrite=True)
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]  # no staging or trash left
