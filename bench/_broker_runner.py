"""Run the broker exactly as `ac7 serve` does, but with Settings overrides (which `ac7 serve` has no flags for).

Usage: python bench/_broker_runner.py CONFIG_PATH '{"history_rate": 1e6}'  (binds 127.0.0.1 on a free port and logs
"... listening on http://127.0.0.1:PORT" like `ac7 serve`; stops on SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from ac7_broker.server import run_broker
from ac7_broker.settings import Settings


def main() -> None:
    config_path = Path(sys.argv[1])
    settings = Settings(**json.loads(sys.argv[2]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_broker(config_path, "127.0.0.1", 0, settings=settings))


if __name__ == "__main__":
    main()
