"""`make docker` builds an image that serves the API: built offline, run as a user would run it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "orchestrators:test"
TOKEN = "container-test-token-0123456789"


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    build = subprocess.run(
        ["scripts/build_service_image.sh", IMAGE], cwd=ROOT, capture_output=True, text=True, check=False, timeout=900
    )
    assert build.returncode == 0, build.stdout + build.stderr
    port = free_port()
    run = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8088", "-e", f"ORCH_BEARER_TOKEN={TOKEN}", IMAGE],
        capture_output=True,
        text=True,
        check=True,
    )
    cid = run.stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
            pytest.fail(f"the container never answered /health:\n{logs.stdout}{logs.stderr}")
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_the_image_serves_chat_as_an_unprivileged_user(container: str) -> None:
    # ready without a Docker engine inside: only the sandboxed tools are unavailable
    assert httpx.get(container + "/ready").status_code == 200
    client = openai.OpenAI(base_url=container + "/v1", api_key=TOKEN, max_retries=0)
    reply = client.chat.completions.create(model="orchestrators-demo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content.startswith("[ORCHESTRATORS_V2 demo mode]")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=container + "/v1", api_key="wrong", max_retries=0).models.list()
    user = subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.User}}", IMAGE], capture_output=True, text=True, check=True
    )
    assert user.stdout.strip() == "10001:10001"
