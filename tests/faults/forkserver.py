"""A process that imports seqlab once and forks one child per fault case, so a case costs a fork, not an
interpreter start and a torch import.

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
    request  {"args": [...seqlab args], "log": PATH, "faults": [FAULT, ...], "kill_after": SECONDS | null}
    reply    {"code": EXIT CODE | null, "signal": SIGNAL NUMBER | null, "fired": [FAULT NAMES]}
A child's stdout and stderr go to `log`. Faults are described in `faults.py`. The server runs no torch
operation itself, so no thread pool exists to be broken by fork.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import faults  # noqa: E402
import seqlab.cli  # noqa: E402,F401  (the expensive imports, once)
import seqlab.runs  # noqa: E402,F401


def run_child(req: dict) -> None:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdin.close()
    faults.install(req.get("faults", []), req["log"] + ".fired")
    sys.argv = ["seqlab", *req["args"]]
    code = 0
    try:
        seqlab.cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99  # an unhandled exception: the tests read it as a traceback
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(req)
        deadline = None if req.get("kill_after") is None else time.monotonic() + req["kill_after"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if deadline is not None and time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = None
            time.sleep(0.005)
        fired_path = req["log"] + ".fired"
        fired = open(fired_path).read().split() if os.path.exists(fired_path) else []
        reply = {"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                 "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, "fired": fired}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
