"""``python -m runner.sim.metadata``: run the simulator in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from runner.sim.metadata.server import MetadataSimulator
from runner.sim.metadata.state import CLOUDS


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m runner.sim.metadata",
                                     description="Simulate the AWS, GCP and Azure instance-metadata services.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (0 for any free one)")
    parser.add_argument("--cloud", default="aws", choices=CLOUDS, help="cloud a new namespace imitates")
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with MetadataSimulator(args.host, args.port, args.cloud) as sim:
        print(f"metadata simulator ({args.cloud}) listening on {args.host}:{sim.url.rsplit(':', 1)[1]}"
              f" ({sim.url})", flush=True)
        while not done.wait(1.0):
            pass
    return 0
