"""A headless-Chromium screenshot of the flywheel's asset graph in the Dagster UI.

Starts `flywheel ui` for a home on a free loopback port (after a small `flywheel run` when
the home has no rounds yet), waits until the webserver answers, screenshots the
`flywheel_round` asset group's lineage view, and stops the UI by pid.

    python benchmarks/screenshot_ui.py --home /tmp/flywheel-demo --out asset_graph.png

Needs Chromium (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
GROUP_URL = "http://127.0.0.1:{port}/locations/flywheel/asset-groups/flywheel_round"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--window-size=1600,900", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(port: int, ui: subprocess.Popen, timeout_s: float = 180) -> None:
    query = json.dumps({"query": "{ assetNodes { id } }"}).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ui.poll() is not None:
            raise RuntimeError(f"flywheel ui exited with {ui.returncode}")
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                if json.loads(response.read()).get("data", {}).get("assetNodes"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(f"the UI did not answer on port {port} within {timeout_s}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="flywheel home to show (a small run is made if it is empty)")
    parser.add_argument("--out", default="asset_graph.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    home = Path(args.home).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "DAGSTER_"))}
    if not (home / ".flywheel" / "warehouse.duckdb").exists():
        subprocess.run([str(BIN / "flywheel"), "run", "--home", str(home), "--rounds", "2", "--tasks-per-domain", "1",
                        "--policy", "flaky-teacher"], env=env, check=True)
    port = free_port()
    ui = subprocess.Popen([str(BIN / "flywheel"), "ui", "--home", str(home), "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_serving(port, ui)
        out = Path(args.out).resolve()
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--screenshot={out}", GROUP_URL.format(port=port)],
                       check=True, capture_output=True, timeout=120)
        print(f"wrote {out}")
    finally:
        ui.send_signal(signal.SIGINT)  # `flywheel ui` exec'd into `dagster dev`, which stops its children
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)  # our own session only
            ui.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
