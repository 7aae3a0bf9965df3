#!/usr/bin/env python3
"""llama.cpp's HTTP server from a prebuilt wheel: ``llama-server`` without compiling llama.cpp.

The ``xllamacpp`` wheel on PyPI (pinned in requirements-dev.lock) ships llama.cpp's own C++ server
(the code of ``tools/server``: the OpenAI routes, ``/health``, ``/slots``, Jinja chat templates
and tool-call parsing) compiled for x86-64-v3 (AVX2, no -march=native). Installing it takes
seconds; building ``llama-server`` from source took 5 to 16 minutes on a 2-core machine. This
script gives it llama-server's command line, for the flags scripts/run_llama_server.sh passes:

    python scripts/llama_server.py --host 127.0.0.1 --port 8080 -m MODEL.gguf --alias test-model \
        --ctx-size 4096 --threads 2 --parallel 2 --jinja [--chat-template-file FILE]

An unknown flag is an error (exit 2) rather than silently ignored, so a flag meant for the real
binary is not lost here. ``--version`` prints the wheel's version. The server runs until the
process gets SIGTERM or SIGINT. Set ``LLAMA_SERVER`` to a real llama-server binary (for example
the output of scripts/build_llama_server.sh) to use that instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from importlib import metadata

DISTRIBUTION = "xllamacpp"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llama_server.py", description="llama.cpp's server (from the xllamacpp wheel) with llama-server's flags."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-m", "--model", help="path of a .gguf model file")
    parser.add_argument("-a", "--alias", help="the model id the API reports")
    parser.add_argument("-c", "--ctx-size", type=int, default=4096, help="total KV cache, shared by the slots")
    parser.add_argument("-t", "--threads", type=int, default=-1)
    parser.add_argument("--threads-http", type=int, default=-1)
    parser.add_argument("-np", "--parallel", type=int, default=1, help="slots (concurrent requests)")
    parser.add_argument("--jinja", action="store_true", help="use the model's Jinja chat template (tool calls)")
    parser.add_argument("--chat-template-file", help="a Jinja chat template to use instead of the model's")
    parser.add_argument("--no-webui", action="store_true", help="no web UI (this server never has one)")
    parser.add_argument("--log-colors", choices=["on", "off", "auto"], default="off")
    args = parser.parse_args(argv)
    if not args.version and not args.model:
        parser.error("-m/--model is required")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        print(
            f"error: the {DISTRIBUTION} wheel is not installed for {sys.executable}; "
            "run `make test-deps` (it installs requirements-dev.lock)",
            file=sys.stderr,
        )
        return 1
    if args.version:
        print(f"llama.cpp server from {DISTRIBUTION} {version}")
        return 0

    # The wheel's ggml uses OpenMP, whose threads spin while they wait for work; on a small shared
    # machine (CI, 2 cores) spinning threads starve the ones doing the work. Measured on 2 busy
    # cores: 50-77 tokens/s passive, 8-30 spinning. Set before the library loads libgomp.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_threads_http = args.threads_http
    params.use_jinja = args.jinja
    if args.chat_template_file:
        with open(args.chat_template_file, encoding="utf-8") as template:
            params.chat_template = template.read()
    params.ui = not args.no_webui
    params.use_color = args.log_colors == "on"
    params.endpoint_slots = True  # the e2e suite reads /slots to see whether the model is generating

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Loads the model and starts serving on background threads; /health answers 200 once loaded.
    server = xllamacpp.Server(params)
    address = server.listening_address
    print(f"llama_server.py: {DISTRIBUTION} {version} serving on {address}", file=sys.stderr, flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
