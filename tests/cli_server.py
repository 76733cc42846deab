"""A fork server for command-line tests: ``python -m curation.cli ARGS`` in a fresh process without paying for the
interpreter start and the heavy imports (torch, transformers, trl, peft: about 7 s) on every call.

The server is one Python process started with the tests' environment; it imports the heavy libraries once, then forks
one child per call. The child changes to the call's folder, points file descriptors 0, 1 and 2 at /dev/null and two
capture files, runs ``curation.cli.main(ARGS)`` as ``python -m curation.cli`` would (an uncaught exception prints its
traceback and exits 1, ``SystemExit`` gives its code, exit handlers run) and exits; the server answers with the exit
code and what the child wrote. So each call is still its own process with its own exit code, file descriptors, signal
handlers and working folder; what it shares with the others is only the state the imports left, which the real
command would have built the same way under the same environment.

    with CliServer(env) as cli:
        proc = cli.run(["data", "stats", "x.tsv"], cwd=folder)   # a subprocess.CompletedProcess
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# the libraries the commands import lazily; a child finds them imported
PRELOAD = ("torch", "transformers", "trl", "peft", "datasets", "curation.cli")

SERVER = r"""
import atexit, importlib, json, os, shutil, signal, sys, tempfile, traceback
proto_in, proto_out = sys.stdin.buffer, os.fdopen(os.dup(1), "w")
for name in sys.argv[1:]:
    importlib.import_module(name)
from curation.cli import main
script = sys.modules["curation.cli"].__file__
tmp = tempfile.mkdtemp(prefix="cli-server-")
proto_out.write("ready\n"); proto_out.flush()
for line in proto_in:
    call = json.loads(line)
    out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            proto_out.close()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.chdir(call["cwd"])
            sys.argv = [script, *call["argv"]]
            signal.alarm(call["timeout"])  # a hung call ends as a killed process would
            try:
                code = main(call["argv"])
            except SystemExit as e:
                code = e.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    with open(out, errors="replace") as f, open(err, errors="replace") as g:
        answer = {"rc": rc, "stdout": f.read(), "stderr": g.read()}
    proto_out.write(json.dumps(answer) + "\n"); proto_out.flush()
shutil.rmtree(tmp, ignore_errors=True)
"""


class CliServer:
    """One fork server (see the module's docstring); ``env`` is the environment of every call."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = PRELOAD):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, *preload], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the command-line fork server did not start (exit code {self.proc.wait()})")

    def run(self, argv: list[str], cwd: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
        """``python -m curation.cli ARGV`` in ``cwd``; a call still running after ``timeout`` seconds is killed
        by SIGALRM (exit code -14)."""
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the command-line fork server died (exit code {self.proc.wait()})")
        answer = json.loads(line)
        return subprocess.CompletedProcess([sys.executable, "-m", "curation.cli", *argv], answer["rc"],
                                           answer["stdout"], answer["stderr"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> CliServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

