#!/usr/bin/env python3
"""The labgrid scenario's clients: a long-lived process per client, labgrid
imported once (an import of labgrid costs tens of seconds under TCG), taking
one command per line on IN_FIFO and answering one JSON line each on OUT_FIFO.

  lg_client.py ENV.yaml IN_FIFO OUT_FIFO

Commands (shell words):
  cli ARGS...      labgrid-client ARGS (labgrid.remote.client.main, in this
                   process): {"rc": N, "out": STDOUT, "err": STDERR}
  serve LOCAL_DIR  USB9PFSDriver.serve(LOCAL_DIR, stage=True) through the
                   environment's RemotePlace (coordinator, exporter, ssh)
  wait SECONDS     USB9PFSDriver.wait_mounted(SECONDS)
  status           USB9PFSDriver.status()
  unserve          USB9PFSDriver.unserve()
Driver commands answer {"ok": RESULT} or {"error": TYPE, "message": ...}.
The environment is made at the first driver command. After that, `cli` is
refused: labgrid-client's own event loop and gRPC channel cannot share a
process with the environment's session (its calls then fail with "Could not
connect to coordinator"), so a client that needs both runs two processes.

Must never: be anything but the rig's test client.
"""
import contextlib
import io
import json
import shlex
import sys
import traceback

from labgrid import Environment
from labgrid.logging import StepLogger
from labgrid.remote import client as lg_client


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    rc = 0
    # main() starts labgrid's step logger and never stops it (one run per process)
    if StepLogger._started:
        StepLogger.stop()
    try:
        sys.argv = ["labgrid-client"] + args
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            lg_client.main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # a crash of the client is an answer too
        rc = 1
        err.write(traceback.format_exc())
    finally:
        sys.argv = argv
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


class Driver:
    def __init__(self, env_file):
        self.env_file = env_file
        self.drv = None
        self.made = False

    def get(self):
        if self.drv is None:
            self.made = True
            env = Environment(self.env_file)
            self.drv = env.get_target("main").get_driver("USB9PFSDriver")
        return self.drv

    def do(self, cmd, args):
        try:
            if cmd == "serve":
                return {"ok": self.get().serve(args[0], stage=True)}
            if cmd == "wait":
                return {"ok": self.get().wait_mounted(timeout=float(args[0]))}
            if cmd == "status":
                return {"ok": self.get().status()}
            if cmd == "unserve":
                self.get().unserve()
                return {"ok": True}
            return {"error": "UnknownCommand", "message": cmd}
        except Exception as e:  # the scenario judges the type and message
            return {"error": type(e).__name__, "message": str(e)}


def main():
    env_file, in_fifo, out_fifo = sys.argv[1:4]
    drv = Driver(env_file)
    with open(in_fifo) as fin, open(out_fifo, "w") as fout:
        print(json.dumps({"ready": True}), file=fout, flush=True)
        for line in fin:
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "cli":
                if drv.made:
                    answer = {"rc": 2, "out": "", "err": "lg_client.py: cli after the environment (see its doc)"}
                else:
                    answer = run_cli(words[1:])
            else:
                answer = drv.do(words[0], words[1:])
            print(json.dumps(answer, default=str), file=fout, flush=True)


if __name__ == "__main__":
    main()
