"""python_exec, inside the sandbox: run the caller's code as ``__main__``.

Payload: ``{"code": str, "stdin": str}``. The code's output is the container's stdout/stderr; an
uncaught exception prints its traceback and exits 1, ``sys.exit(n)`` exits n.
"""

import builtins
import io
import json
import sys


def main() -> None:
    size = int(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read(size))
    # -S skips `site`, which is what defines exit() and quit(): give code the usual ones.
    builtins.__dict__.update(exit=sys.exit, quit=sys.exit)
    sys.stdin = io.StringIO(payload.get("stdin") or "")
    sys.argv = ["<tool>"]
    code = compile(payload["code"], "<tool>", "exec")
    del payload
    exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 - this IS the sandboxed run


main()
