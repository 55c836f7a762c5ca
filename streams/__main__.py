"""``python -m streamrl.streams -c streamrl.yaml``: run the Faust aggregator worker (same as ``streamrl streams``)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> None:
    """Parse ``--config`` and ``--log-level``, then run the worker until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m streamrl.streams", description=__doc__)
    parser.add_argument(
        "-c", "--config", default=None, help="YAML config (default: $STREAMRL_CONFIG or ./streamrl.yaml)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    from streamrl.config import load_settings
    from streamrl.errors import StreamRLError
    from streamrl.streams.worker import run_worker

    try:
        run_worker(load_settings(args.config), log_level=args.log_level)
    except StreamRLError as exc:
        logging.getLogger("streams").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
