"""Programs that run INSIDE the sandbox container (``python3 -I -S -c <source> <n>``), never in the
service: standard library only, Python 3.11. Each reads an n-byte JSON payload from stdin.

They are read as text by :mod:`app.tools.builtins` and passed to the container as the ``-c``
argument, so nothing from the host is mounted into the container.
"""
