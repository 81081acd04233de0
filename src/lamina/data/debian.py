"""Running the Debian tools (``apt-get download``, ``dpkg-deb -x``) that fetch offline datasets."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_quiet(cmd: list[str], cwd: Path) -> str | None:
    """Run a command; None on success, else the last line it printed (the reason)."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return None
    said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
    return said[-1]
