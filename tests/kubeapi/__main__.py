"""``python -m kubeapi --config FILE`` (with tests/ on the path): run one test API server process.

The config file is JSON (see :class:`server.Config`); once listening, the
server writes ``{"port", "pid"}`` to the config's ``ready_file``.
"""

import argparse
import json
import os
import signal

from .server import APIServer, Config


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # ends serve_forever, then the socket is closed


def main() -> None:
    parser = argparse.ArgumentParser(prog="kubeapi", description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with open(args.config) as stream:
        data = json.load(stream)
    server = APIServer(Config(data))
    signal.signal(signal.SIGTERM, _stop)
    ready = data.get("ready_file")
    if ready:
        with open(ready + ".tmp", "w") as stream:
            json.dump({"port": server.server_address[1], "pid": os.getpid()}, stream)
        os.replace(ready + ".tmp", ready)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
