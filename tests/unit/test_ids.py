"""Identifiers stay unique across processes forked after the module was imported."""

from __future__ import annotations

import os
import re

from app.ids import new_id, new_time_uuid, new_uuid

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_ids_have_their_shapes() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", new_id())
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", new_uuid())
    assert UUID7.fullmatch(new_time_uuid())


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    # gunicorn --preload forks its workers after importing the app: without a re-seed at fork,
    # each worker's ids would be the parent's next ones, the same in every worker.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then exit without running pytest's teardown
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
