"""The server's process figures while a run goes on, read from its ``/metrics`` (Prometheus text):
:class:`MetricsSampler` samples process CPU seconds, resident memory and reserved GPU memory every
second; its :meth:`~MetricsSampler.summary` gives the CPU use (percent of one core) between two
times and the peak memory. The process figures are the standard ``process_cpu_seconds_total`` and
``process_resident_memory_bytes`` (``mouthpiece_process_*`` on servers before prometheus_client).
:func:`get_json` is the tool's GET of a JSON endpoint (``/api/info``, ``/healthz``): ``{}`` for
anything but a 200 with JSON, so a server without it is not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MetricsSampler", "get_json", "parse_metrics"]

CPU_SECONDS = ("process_cpu_seconds_total", "mouthpiece_process_cpu_seconds_total")
RESIDENT_BYTES = ("process_resident_memory_bytes", "mouthpiece_process_resident_memory_bytes")


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text -> {sample name: [(labels, value)]} (what parses: a malformed line ends it)."""
    out: dict[str, list[tuple[dict, float]]] = {}
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _metric(m: dict, names: str | tuple[str, ...], **labels) -> float | None:
    """The sum of the samples of the first of ``names`` the text has (with these labels)."""
    for name in (names,) if isinstance(names, str) else names:
        vals = [v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
        if vals:
            return float(sum(vals))
    return None


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def get_json(url: str, timeout: float = 10.0, token: str | None = None) -> dict:
    """The JSON at ``url``, {} when it cannot be had; RuntimeError when the server wants a token
    (none or a wrong one given: the user must say)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(url, headers=auth_headers(token)) as r:
                if r.status == 401:
                    raise RuntimeError(
                        "the server wants a token: give --token or set MOUTHPIECE_TOKEN"
                        if token is None
                        else "the server refused the token (--token or MOUTHPIECE_TOKEN)"
                    )
                return await r.json() if r.status == 200 else {}
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError, ValueError):
        return {}


class MetricsSampler:
    """``/metrics`` every ``interval_s`` while a run goes on: (time, cpu s, rss bytes, gpu bytes)."""

    def __init__(self, url: str, interval_s: float = 1.0, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.interval_s = interval_s
        self.samples: list[tuple[float, float | None, float | None, float | None]] = []
        self._task: asyncio.Task | None = None

    async def sample(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
                async with http.get(f"{self.url}/metrics", headers=auth_headers(self.token)) as r:
                    text = await r.text() if r.status == 200 else ""
        except (TimeoutError, aiohttp.ClientError):
            return
        m = parse_metrics(text)
        self.samples.append(
            (
                time.time(),
                _metric(m, CPU_SECONDS),
                _metric(m, RESIDENT_BYTES),
                _metric(m, "mouthpiece_gpu_memory_bytes", kind="reserved"),
            )
        )

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)  # the sampling period (nothing waits on it)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()

    def summary(self, t_from: float, t_to: float) -> dict:
        """CPU (percent of one core) between the samples nearest ``t_from`` .. ``t_to``; peak memory."""
        s = [x for x in self.samples if x[1] is not None]
        inside = [x for x in s if t_from <= x[0] <= t_to] or s
        out: dict = {
            "cpu_percent": None,
            "rss_max_mb": None,
            "gpu_max_mb": None,
            "samples": len(self.samples),
        }
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            out["cpu_percent"] = round(
                100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1
            )
        rss = [x[2] for x in self.samples if x[2] is not None]
        gpu = [x[3] for x in self.samples if x[3] is not None]
        if rss:
            out["rss_max_mb"] = round(max(rss) / 2**20, 1)
        if gpu:
            out["gpu_max_mb"] = round(max(gpu) / 2**20, 1)
        return out
