"""One snapshot per screen and state (the scenes of scripts/export_screenshots.py), at 120x36 with the clock and the
simulated world frozen. Baselines live in __snapshots__/ and were reviewed as pictures before being accepted; after a
deliberate change, regenerate with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` and review the new
pictures the same way (scripts/export_screenshots.py writes the same scenes as SVG files)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("export_screenshots", ROOT / "scripts" / "export_screenshots.py")
scenes = importlib.util.module_from_spec(_spec)
sys.modules["export_screenshots"] = scenes  # dataclasses look their module up there
_spec.loader.exec_module(scenes)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scene", scenes.SCENES, ids=[s.name for s in scenes.SCENES])
def test_scene(scene, snap_compare, demo_template, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(demo_template, home)
    app, session = scenes.make_app(home)
    try:
        assert snap_compare(app, terminal_size=scenes.SIZE, run_before=scene.run)
    finally:
        session.close()
