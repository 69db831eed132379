"""Local peers for ``io_throughput.py``: an OpenAI-format server and a webhook receiver.

One asyncio process, so hundreds of requests in flight cost it little CPU. The model's
latency is drawn per request from a log-normal distribution (median ``--median`` s, p99
``--p99`` s: a long tail, as real LLM APIs have); the server enforces its own limit of
``rpm`` requests in any 60 s window and answers 429 with ``Retry-After`` past it, like a
provider. The receiver answers after ``receiver_latency`` s and counts ``webhook-id``s.

    GET  /_stats      counters since the last reset
    POST /_reset      {"rpm": N, "receiverLatency": s} sets the limit and clears counters

Run by the benchmark as ``python benchmarks/io_peers.py --port-file FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import time
from typing import Any

Z99 = 2.3263  # the standard normal's 99th percentile


class State:
    """The peers' settings and counters."""

    def __init__(self, median: float, p99: float) -> None:
        self.mu = math.log(median)
        self.sigma = (math.log(p99) - self.mu) / Z99
        self.reset(3000, 0.1)

    def reset(self, rpm: int, receiver_latency: float) -> None:
        self.rpm = rpm
        self.receiver_latency = receiver_latency
        self.window: collections.deque[float] = collections.deque()
        self.admitted: list[float] = []  # when each admitted request arrived
        self.first_admitted_wall: float | None = None
        self.last_admitted_wall: float | None = None
        self.completions: list[float] = []
        self.rate_limited = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.deliveries = 0
        self.delivery_ids: collections.Counter[str] = collections.Counter()
        self.delivered_at: list[float] = []

    def admit(self) -> bool:
        now = time.monotonic()
        while self.window and self.window[0] <= now - 60:
            self.window.popleft()
        if len(self.window) >= self.rpm:
            return False
        self.window.append(now)
        self.admitted.append(now)
        if self.first_admitted_wall is None:
            self.first_admitted_wall = time.time()
        self.last_admitted_wall = time.time()
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "completions": len(self.completions),
            "firstCompletion": self.completions[0] if self.completions else None,
            "lastCompletion": self.completions[-1] if self.completions else None,
            "admitted": len(self.admitted),
            "firstAdmitted": self.admitted[0] if self.admitted else None,
            "lastAdmitted": self.admitted[-1] if self.admitted else None,
            "firstAdmittedWall": self.first_admitted_wall,
            "lastAdmittedWall": self.last_admitted_wall,
            "rateLimited": self.rate_limited,
            "peakInFlight": self.peak_in_flight,
            "deliveries": self.deliveries,
            "uniqueDeliveries": len(self.delivery_ids),
            "firstDelivery": self.delivered_at[0] if self.delivered_at else None,
            "lastDelivery": self.delivered_at[-1] if self.delivered_at else None,
            "now": time.monotonic(),
        }


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "OK")
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head.append(f"Content-Length: {len(payload)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    await writer.drain()


async def _completion(state: State, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    if not state.admit():
        state.rate_limited += 1
        error = {"error": {"message": "Rate limit reached", "type": "rate_limit", "code": None}}
        await _respond(writer, 429, error, {"Retry-After": "1"})
        return
    state.in_flight += 1
    state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
    try:
        await asyncio.sleep(random.lognormvariate(state.mu, state.sigma))
    finally:
        state.in_flight -= 1
    prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
    text = f"A fine description of {prompt[-40:]}"
    state.completions.append(time.monotonic())
    await _respond(
        writer,
        200,
        {
            "id": f"chatcmpl-{len(state.completions)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "bench"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
        },
        {"x-ratelimit-limit-requests": str(state.rpm)},
    )


async def _handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            method, path, _ = request_line.decode().split(" ", 2)
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            raw = await reader.readexactly(length) if length else b""
            body = json.loads(raw) if raw else {}
            if path.endswith("/chat/completions"):
                await _completion(state, body, writer)
            elif path.startswith("/hook"):
                await asyncio.sleep(state.receiver_latency)
                state.deliveries += 1
                state.delivery_ids[headers.get("webhook-id", "")] += 1
                state.delivered_at.append(time.monotonic())
                await _respond(writer, 200, {"ok": True})
            elif path == "/_stats":
                await _respond(writer, 200, state.stats())
            elif path == "/_reset":
                state.reset(int(body.get("rpm", 3000)), float(body.get("receiverLatency", 0.1)))
                await _respond(writer, 200, {"ok": True})
            else:
                await _respond(writer, 404, {"error": path})
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(port_file: str, median: float, p99: float) -> None:
    state = State(median, p99)
    server = await asyncio.start_server(
        lambda r, w: _handle(state, r, w), "127.0.0.1", 0, backlog=2048
    )
    port = server.sockets[0].getsockname()[1]
    with open(port_file, "w") as f:
        f.write(str(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--median", type=float, default=1.0)
    parser.add_argument("--p99", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.port_file, args.median, args.p99))
