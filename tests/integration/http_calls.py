"""Plain HTTP calls to the bridge's HTTP face, as a script or curl makes them (no browser, no
Origin header), blocking: tests run them with asyncio.to_thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def post_json(url: str, body: object) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read()).get("reason", "")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())["reason"]


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as refused:
        return refused.code
