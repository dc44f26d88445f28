"""core never imports textual or rich: import every linkdesk.core module in a fresh interpreter and check."""

import pkgutil
import subprocess
import sys

import linkdesk.core


def _core_modules() -> list[str]:
    names = ["linkdesk.core"]
    for info in pkgutil.walk_packages(linkdesk.core.__path__, prefix="linkdesk.core."):
        names.append(info.name)
    return names


def test_there_are_core_modules_to_check():
    assert "linkdesk.core.model" in _core_modules()


def test_core_modules_do_not_import_textual_or_rich():
    for name in _core_modules():
        code = (
            "import importlib, sys\n"
            f"importlib.import_module({name!r})\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
            "print(','.join(bad))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"importing {name} failed:\n{out.stderr}"
        assert out.stdout.strip() == "", f"{name} imported {out.stdout.strip()}"
