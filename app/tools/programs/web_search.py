"""web_search, inside a sandbox with a network allowance: one HTML search request, parsed.

Payload: ``{"query", "max_results", "snippet_max_chars", "url", "timeout", "cadata"}``. Prints one
JSON object: ``{"ok": true, "results": [{"title", "url", "snippet"}]}`` or
``{"ok": false, "error": <code>, "detail": <text>}``. The whole fetch, name resolution included,
runs against a deadline: offline, it answers with an error instead of hanging.

The container image carries no CA certificates; the service sends its bundle in the payload.
"""

import json
import os
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from typing import Any

MAX_PAGE_BYTES = 2_000_000
USER_AGENT = "Mozilla/5.0 (compatible; orchestrators-web-search/1.0)"


class _Results(HTMLParser):
    """DuckDuckGo's HTML results: ``a.result__a`` (title, link) then ``.result__snippet``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.results: list[dict[str, str]] = []
        self._field: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self._field is not None:
            self._depth += 1
            return
        if tag == "a" and "result__a" in classes:
            href = dict(attrs).get("href") or ""
            self.results.append({"title": "", "url": _target(href), "snippet": ""})
            self._field, self._depth = "title", 0
        elif "result__snippet" in classes and self.results:
            self._field, self._depth = "snippet", 0

    def handle_endtag(self, tag: str) -> None:
        if self._field is None:
            return
        if self._depth == 0:
            self._field = None
        else:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._field is not None and self.results:
            self.results[-1][self._field] += data


def _target(href: str) -> str:
    """DuckDuckGo links go through a redirect (``/l/?uddg=<url>``): return the real URL."""
    parts = urllib.parse.urlsplit(href)
    target = urllib.parse.parse_qs(parts.query).get("uddg")
    if target:
        return target[0]
    return urllib.parse.urljoin("https://duckduckgo.com/", href)


def _clean(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def search(payload: dict[str, Any]) -> dict[str, Any]:
    context = ssl.create_default_context(cadata=payload.get("cadata") or None)
    url = payload["url"] + "?" + urllib.parse.urlencode({"q": payload["query"]})
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=payload["timeout"], context=context) as response:  # noqa: S310
            page = response.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return {"ok": False, "error": "search_http_error", "detail": f"the search site answered {exc.code}"}
    except urllib.error.URLError as exc:
        return {"ok": False, "error": "network_unavailable", "detail": f"cannot reach the search site: {exc.reason}"}
    except TimeoutError:
        return {"ok": False, "error": "network_timeout", "detail": "the search site did not answer in time"}
    except OSError as exc:
        return {"ok": False, "error": "network_unavailable", "detail": f"cannot reach the search site: {exc}"}
    parser = _Results()
    parser.feed(page)
    limit = int(payload["snippet_max_chars"])
    results = [
        {"title": _clean(r["title"], 200), "url": r["url"][:2000], "snippet": _clean(r["snippet"], limit)}
        for r in parser.results
        if r["url"]
    ]
    return {"ok": True, "results": results[: int(payload["max_results"])]}


def main() -> None:
    size = int(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read(size))
    outcome: dict[str, Any] = {
        "ok": False,
        "error": "network_timeout",
        "detail": "no answer from the search site in time (offline?)",
    }

    def work() -> None:
        nonlocal outcome
        outcome = search(payload)

    # Name resolution ignores socket timeouts: a deadline on the whole fetch bounds it too.
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(float(payload["timeout"]) + 0.5)
    sys.stdout.write(json.dumps(outcome))
    sys.stdout.flush()
    os._exit(0)  # do not wait for a worker stuck in getaddrinfo


main()
