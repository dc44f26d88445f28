import os
import socket

import pytest

# Network traffic in tests goes to 127.0.0.1 only.
for _k in [k for k in os.environ if k.lower().endswith("_proxy")]:
    os.environ.pop(_k)

_orig_connect = socket.socket.connect


def _loopback_only(self, address):
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            raise RuntimeError(f"tests may only connect to loopback, not {host!r}")
    return _orig_connect(self, address)


socket.socket.connect = _loopback_only


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own LINKDESK_HOME so no test touches the user's real data."""
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path / "linkdesk-home"))
