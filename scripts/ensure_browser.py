"""Make sure a headless Chromium exists for rendering figures to PNG (kaleido needs one).

Run by the test environment's set-up (`hatch test`). On Debian/Ubuntu as root it installs the
`chromium` package (and DejaVu fonts, which have the glyphs nnterp uses to show
whitespace in tokens) with apt-get when no browser is found; elsewhere it says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of an installed Chromium/Chrome, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def main() -> int:
    found = find_browser()
    if found:
        print(f"ensure_browser: using {found}")
        return 0
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("ensure_browser: installing Debian's chromium for PNG rendering (one time)...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "fonts-dejavu-core"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        found = find_browser()
        print(f"ensure_browser: installed {found}")
        return 0 if found else 1
    print(
        "ensure_browser: no Chromium/Chrome found. PNG export (and its tests) need one: install "
        "your system's chromium package, or run `kaleido_get_chrome` (needs internet).",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
