"""Where linkdesk keeps its files: the data root, one directory per profile, and the small config file.

Layout (design.md §4)::

    <home>/                       $LINKDESK_HOME, else platformdirs.user_data_path("linkdesk")
        demo/cache.sqlite         the demo profile's cache
        demo/simulator.sqlite     the built-in simulator's state
        live-<customer id>/cache.sqlite
    <config dir>/config.json      $LINKDESK_HOME/config, else platformdirs.user_config_path("linkdesk")

Directories are created with mode 0700 and the config file is written atomically with mode 0600: the cache holds
an agency's client list, which is nobody else's business on a shared machine.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

ENV_HOME = "LINKDESK_HOME"
DEMO_PROFILE = "demo"
CONFIG_FILE = "config.json"

_PROFILE_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")


def home() -> Path:
    """The data root: ``$LINKDESK_HOME`` when set, else the platform's user data directory for linkdesk.

    Not created here; :func:`profile_dir` creates what it needs.
    """
    override = os.environ.get(ENV_HOME)
    if override:
        return Path(override).expanduser()
    import platformdirs  # only needed without the override; keeps tests and portable installs light

    return platformdirs.user_data_path("linkdesk")


def validate_profile(profile: str) -> str:
    """Return ``profile`` if it is a valid profile name, else raise ValueError saying what is allowed."""
    if not isinstance(profile, str) or not _PROFILE_RE.fullmatch(profile):
        raise ValueError(
            f"{profile!r} is not a valid profile name. Use 1 to 100 letters, digits, '-' or '_' "
            f"(for example 'demo' or 'live-1234567')."
        )
    return profile


def _ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory: set it explicitly.
    if (path.stat().st_mode & 0o777) != 0o700:
        os.chmod(path, 0o700)
    return path


def profile_dir(profile: str) -> Path:
    """The directory of one profile (``demo`` or ``live-<customer id>``), created with mode 0700."""
    return _ensure_private_dir(home() / validate_profile(profile))


def cache_path(profile: str) -> Path:
    """The cache database of a profile (its directory is created; the file is not)."""
    return profile_dir(profile) / "cache.sqlite"


def simulator_state_path() -> Path:
    """The built-in simulator's state file, kept in the demo profile."""
    return profile_dir(DEMO_PROFILE) / "simulator.sqlite"


def config_dir() -> Path:
    """The config directory (non-secret settings), created with mode 0700.

    ``$LINKDESK_HOME/config`` when the override is set, so a test or a portable install stays self-contained.
    """
    override = os.environ.get(ENV_HOME)
    if override:
        path = Path(override).expanduser() / "config"
    else:
        import platformdirs

        path = platformdirs.user_config_path("linkdesk")
    return _ensure_private_dir(path)


def config_file() -> Path:
    """The JSON config file's path (it may not exist yet)."""
    return config_dir() / CONFIG_FILE


def read_config() -> dict[str, Any]:
    """The config as a dict; an absent, unreadable or damaged file reads as empty (it only holds preferences)."""
    try:
        data = json.loads(config_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_private_json(target: Path, data: dict[str, Any], *, prefix: str = ".tmp-") -> None:
    """Replace ``target`` with JSON atomically (temp file, fsync, rename); the temp file is 0600 before a byte is
    written, so secrets never sit in a readable file."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_config(data: dict[str, Any]) -> None:
    """Replace the config file atomically, mode 0600."""
    write_private_json(config_file(), data, prefix=".config-")


def last_profile() -> str | None:
    """The profile used last (``set_last_profile``), or None when there is none or the stored name is invalid."""
    name = read_config().get("last_profile")
    if not isinstance(name, str):
        return None
    try:
        return validate_profile(name)
    except ValueError:
        return None


def set_last_profile(name: str) -> None:
    """Remember ``name`` as the profile to open next time (other config keys are kept)."""
    validate_profile(name)
    data = read_config()
    data["last_profile"] = name
    write_config(data)
