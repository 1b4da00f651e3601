"""Plain HTTP calls to the bridge's HTTP face, as a script or curl makes them (no browser, no
Origin header), blocking: tests run them with asyncio.to_thread."""

from __future__ import annotations

import json
import re
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


def scrape(address: str) -> dict[str, float]:
    """`name{labels}` → value, from the text format."""
    with urllib.request.urlopen(f"{address}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def value(series: dict[str, float], name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    matches = [v for k, v in series.items() if k.split("{")[0] == name and _labels(k) == wanted]
    assert len(matches) == 1, (name, labels, [k for k in series if k.startswith(name)][:5])
    return matches[0]


def _labels(key: str) -> str:
    inside = key.partition("{")[2].rstrip("}")
    return ",".join(sorted(part for part in re.findall(r'\w+="[^"]*"', inside) if not part.startswith("le=")))
