from __future__ import annotations

import json
import os
import stat

import platformdirs
import pytest

from linkdesk.core import paths


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_home_uses_the_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path / "h"))
    assert paths.home() == tmp_path / "h"


def test_home_and_config_fall_back_to_platformdirs(tmp_path, monkeypatch):
    monkeypatch.delenv("LINKDESK_HOME")
    monkeypatch.setattr(platformdirs, "user_data_path", lambda app: tmp_path / "data" / app)
    monkeypatch.setattr(platformdirs, "user_config_path", lambda app: tmp_path / "conf" / app)
    assert paths.home() == tmp_path / "data" / "linkdesk"
    assert paths.config_dir() == tmp_path / "conf" / "linkdesk"
    assert paths.cache_path("demo") == tmp_path / "data" / "linkdesk" / "demo" / "cache.sqlite"


def test_profile_dir_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path / "h"))
    old = os.umask(0o022)
    try:
        d = paths.profile_dir("live-1234567")
    finally:
        os.umask(old)
    assert d == tmp_path / "h" / "live-1234567"
    assert d.is_dir() and _mode(d) == 0o700


def test_existing_profile_dir_with_loose_mode_is_tightened(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path))
    (tmp_path / "demo").mkdir(mode=0o755)
    os.chmod(tmp_path / "demo", 0o755)
    assert _mode(paths.profile_dir("demo")) == 0o700


def test_cache_and_simulator_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path))
    assert paths.cache_path("demo") == tmp_path / "demo" / "cache.sqlite"
    assert paths.simulator_state_path() == tmp_path / "demo" / "simulator.sqlite"
    assert not paths.cache_path("demo").exists()  # only the directory is created


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "démo", "x" * 101, ".", "live-1\n"])
def test_invalid_profile_names_are_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="not a valid profile name.*letters, digits"):
        paths.profile_dir(bad)


@pytest.mark.parametrize("good", ["demo", "live-1234567", "A_b-9"])
def test_valid_profile_names(good):
    assert paths.profile_dir(good).name == good


def test_config_dir_under_override_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path))
    d = paths.config_dir()
    assert d == tmp_path / "config" and _mode(d) == 0o700


def test_last_profile_roundtrip_file_is_0600_and_keeps_other_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path))
    assert paths.last_profile() is None
    paths.write_config({"theme": "dark"})
    paths.set_last_profile("live-42")
    assert paths.last_profile() == "live-42"
    f = paths.config_file()
    assert _mode(f) == 0o600
    assert json.loads(f.read_text()) == {"theme": "dark", "last_profile": "live-42"}
    # no temp files left behind by the atomic write
    assert sorted(p.name for p in f.parent.iterdir()) == ["config.json"]


def test_set_last_profile_validates():
    with pytest.raises(ValueError):
        paths.set_last_profile("no/slashes")
    assert paths.last_profile() is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"last_profile": "../x"}', '{"last_profile": 7}'])
def test_damaged_config_reads_as_no_last_profile(content):
    paths.config_file().write_text(content)
    assert paths.last_profile() is None


def test_failed_config_write_leaves_old_file_and_no_temp(monkeypatch):
    paths.set_last_profile("demo")

    def boom(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", boom)
        with pytest.raises(OSError):
            paths.set_last_profile("live-1")
    assert paths.last_profile() == "demo"
    assert [p.name for p in paths.config_dir().iterdir()] == ["config.json"]
