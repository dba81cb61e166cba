"""``/metrics`` (streaming/metrics.py, prometheus_client) with real clients: aiortc peers holding
sessions over loopback while the test scrapes with aiohttp, Debian's ``promtool`` linting a real
scrape, and a real Prometheus server scraping the test server and answering PromQL about it.

What is checked: no counter and no histogram series ever goes back, whatever the sessions do
(scraped continuously while sessions run and end); the ended sessions' totals are exact (the
frames every session made, every frame record observed once in the stage histogram); integer
counters are exact past a million; the histogram's buckets; the standard process metrics on a
registry of each server's own; OpenMetrics when asked for; the bench tool's reader. The tools that
need Debian's ``prometheus`` package skip with the reason where it is missing. Every wait has a
time limit; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import urllib.parse

import aiohttp
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from engine.live.messages import STAGES
from streaming.bench.metrics import MetricsSampler, parse_metrics
from streaming.client import RtcClient
from streaming.metrics import BUCKETS_S, session_counts
from streaming.registry import Busy
from streaming.server import SERVER, AvatarLibrary, ServerConfig, create_app, serve_app
from tests.helpers import LIMIT, invert_engine, server_config, speechlike, until, write_wav

NO_PROMETHEUS = "Debian's prometheus package is not installed (apt-get install -y prometheus)"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture(scope="module")
def library_factory(tmp_path_factory):
    cache = tmp_path_factory.mktemp("metrics-avatars")

    def make() -> AvatarLibrary:
        return AvatarLibrary.from_config(ServerConfig(refs=1, cache_dir=str(cache)))

    return make


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics-audio") / "speech.wav"
    write_wav(path, speechlike(3.0, seed=11))
    return path


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def monotonic_series(text: str) -> dict[tuple, float]:
    """Every sample that must never go back: counters and histograms ((name, labels) -> value)."""
    out = {}
    for f in text_string_to_metric_families(text):
        if f.type in ("counter", "histogram"):
            for s in f.samples:
                if not s.name.endswith("_created"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels) -> float:
    (v,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and all(s.labels.get(k) == x for k, x in labels.items())]  # fmt: skip
    return v


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def run_session(url: str, server, wav, frames: int = 40) -> tuple[RtcClient, object]:
    """A real peer (its microphone the speech file) whose session has sent ``frames`` frames, some
    of them timed on the wire (stage records)."""
    client = await RtcClient(url, audio_path=str(wav), keep_video=False).start()
    s = server.sessions[client.session].stream
    await client.wait_video(frames, LIMIT)
    await until(lambda: len(s.latency["total"]) >= frames // 2, "frame records")
    return client, s


@pytest.fixture(scope="module")
def sessions_ending(library_factory, landmark_model, wav):
    """Two sessions run, then end one after the other (DELETE) while a scraper reads /metrics
    back to back; the scrapes (in order), the sessions' own final counts and a scrape of each
    format taken while both ran."""
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            out = {"scrapes": [await scrape(http, url)]}
            (a, sa), (b, sb) = await asyncio.gather(
                run_session(url, server, wav), run_session(url, server, wav)
            )
            out["running"] = await scrape(http, url)
            async with http.get(f"{url}/metrics", headers={"Accept": OPENMETRICS}) as r:
                out["openmetrics"] = (r.headers["Content-Type"], await r.text())
            out["session_ids"] = {sa.id, sb.id}
            stop = asyncio.Event()

            async def scraper():
                while not stop.is_set():
                    out["scrapes"].append(await scrape(http, url))

            task = asyncio.get_running_loop().create_task(scraper())
            for client, s in ((a, sa), (b, sb)):
                n = len(out["scrapes"])
                await until(lambda n=n: len(out["scrapes"]) > n + 2, "scrapes while it runs")
                async with http.delete(f"{url}/api/sessions/{s.id}") as r:
                    assert r.status == 200
                await client.close()
                n = len(out["scrapes"])
                await until(lambda n=n: len(out["scrapes"]) > n + 2, "scrapes after it ended")
            stop.set()
            await asyncio.wait_for(task, LIMIT)
            out["scrapes"].append(await scrape(http, url))
            out["final"] = [session_counts(s) for s in (sa, sb)]
            out["records"] = {st: sum(len(s.latency[st]) for s in (sa, sb)) for st in STAGES}
            out["history"] = max(len(s.latency["total"]) for s in (sa, sb)), sa.config.history
        return out

    return asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))


def test_counters_and_histograms_never_go_back_as_sessions_end(sessions_ending):
    scrapes = sessions_ending["scrapes"]
    assert len(scrapes) >= 8
    before = monotonic_series(scrapes[0])
    went_up = set()
    for text in scrapes[1:]:
        now = monotonic_series(text)
        for key, v in before.items():
            assert key in now, f"{key} vanished"
            assert now[key] >= v, f"{key} went back: {v} -> {now[key]}"
            if now[key] > v:
                went_up.add(key[0])
        before = now
    # the figures moved meanwhile (the check compared something), sessions ended
    assert {"mouthpiece_video_frames_sent_total", "mouthpiece_frames_total"} <= went_up
    assert {"mouthpiece_stage_latency_seconds_count", "mouthpiece_sessions_ended_total"} <= went_up
    ended = [value(t, "mouthpiece_sessions_ended_total") for t in scrapes]
    active = [value(t, "mouthpiece_sessions_active") for t in scrapes]
    assert ended[0] == 0 and ended[-1] == 2 and 1 in ended and active[-1] == 0 and 1 in active


def test_ended_sessions_totals_are_exact(sessions_ending):
    last = sessions_ending["scrapes"][-1]
    final = sessions_ending["final"]
    for kind in ("speech", "rest", "dropped"):
        assert value(last, "mouthpiece_frames_total", kind=kind) == sum(f[kind] for f in final)
    assert all(f["speech"] > 0 and f["video_sent"] >= 40 for f in final)  # each ran: speech, 40 frames
    assert value(last, "mouthpiece_model_calls_total") == sum(f["model_calls"] for f in final) > 0
    assert value(last, "mouthpiece_video_frames_sent_total") == sum(f["video_sent"] for f in final)
    assert value(last, "mouthpiece_video_late_frames_total") == sum(f["video_late"] for f in final)
    assert value(last, "mouthpiece_sessions_started_total") == 2
    assert value(last, "mouthpiece_sessions_rejected_total") == 0
    # every frame record was observed once, stage by stage (the sessions kept all of theirs)
    kept, history = sessions_ending["history"]
    assert kept < history
    records = sessions_ending["records"]
    assert records["total"] >= 40 and records["hold"] >= 40
    for stage in STAGES:
        assert value(last, "mouthpiece_stage_latency_seconds_count", stage=stage) == records[stage], stage
    # the per-session gauges went with the sessions
    assert "mouthpiece_session_fps{" not in last


def test_running_sessions_have_their_gauges_and_the_histogram_is_consistent(sessions_ending):
    text = sessions_ending["running"]
    fam = families(text)
    ids = sessions_ending["session_ids"]
    for name in ("mouthpiece_session_fps", "mouthpiece_session_viewers", "mouthpiece_session_late_frames"):
        assert {s.labels["session"] for s in fam[name].samples} == ids, name
    assert all(s.value > 0 for s in fam["mouthpiece_session_fps"].samples)
    assert value(text, "mouthpiece_sessions_active") == 2 and value(text, "mouthpiece_viewers_active") == 0
    hist = fam["mouthpiece_stage_latency_seconds"]
    assert hist.type == "histogram"
    for stage in STAGES:
        buckets = [(s.labels["le"], s.value) for s in hist.samples
                   if s.name.endswith("_bucket") and s.labels["stage"] == stage]  # fmt: skip
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), stage  # cumulative
        assert buckets[-1] == ("+Inf", value(text, "mouthpiece_stage_latency_seconds_count", stage=stage))
    # the frames' total stays at the delay (1 s): between the 0.8 s and 1.5 s bounds
    n = value(text, "mouthpiece_stage_latency_seconds_count", stage="total")
    mean = value(text, "mouthpiece_stage_latency_seconds_sum", stage="total") / n
    assert 0.8 < mean < 1.5 and n >= 40


def test_histogram_buckets_resolve_5_ms_to_2_s(library_factory, landmark_model):
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())
    metrics = app[SERVER].metrics
    assert BUCKETS_S[0] == 0.005 and BUCKETS_S[-1] == 2.0 and len(BUCKETS_S) >= 15
    # a bound is inclusive (le); a negative time (none is) would count as 0, never taking _sum back
    for seconds in (0.005, 0.0051, 0.1, 2.0, 2.5, -0.001):
        metrics.observe_frame({"index": 0, "speech": True, "encode": seconds, "times": {}})
    text = metrics.text()
    fam = families(text)["mouthpiece_stage_latency_seconds"]
    for stage in STAGES:  # every stage's series is there from the start, with every bound
        les = [
            s.labels["le"] for s in fam.samples if s.name.endswith("_bucket") and s.labels["stage"] == stage
        ]
        assert [float(le) for le in les] == [*BUCKETS_S, float("inf")]
    got = {s.labels["le"]: s.value for s in fam.samples
           if s.name.endswith("_bucket") and s.labels["stage"] == "encode"}  # fmt: skip
    assert got["0.005"] == 2 and got["0.01"] == 3 and got["0.08"] == 3 and got["0.1"] == 4
    assert got["1.5"] == 4 and got["2.0"] == 5 and got["+Inf"] == 6
    assert value(text, "mouthpiece_stage_latency_seconds_sum", stage="encode") == pytest.approx(4.6101)
    assert value(text, "mouthpiece_stage_latency_seconds_count", stage="total") == 0


def test_integer_counters_are_exact_past_a_million(library_factory, landmark_model):
    app = create_app(
        server_config(max_sessions=0), engine=invert_engine(landmark_model), library=library_factory()
    )
    server = app[SERVER]
    n = 1_000_003

    async def refuse() -> None:  # the real refusal path, a million times
        for _ in range(n):
            with contextlib.suppress(Busy):
                await server.new_session("webrtc", None)

    asyncio.run(refuse())
    record = {"index": 0, "speech": False, "hold": 0.25, "times": {}}
    for _ in range(n):
        server.metrics.observe_frame(record)
    text = server.metrics.text()
    assert value(text, "mouthpiece_sessions_rejected_total") == n  # %.6g printed 1.00000e+06
    assert value(text, "mouthpiece_stage_latency_seconds_count", stage="hold") == n
    assert value(text, "mouthpiece_stage_latency_seconds_bucket", stage="hold", le="0.25") == n
    assert value(text, "mouthpiece_stage_latency_seconds_sum", stage="hold") == pytest.approx(n / 4, rel=1e-9)
    assert parse_metrics(text)["mouthpiece_sessions_rejected_total"] == [({}, float(n))]  # the bench reader
    # up to 2**53 every integer is exact in the text
    server.closed_counts["rest"] = 2**53 - 1
    assert value(server.metrics.text(), "mouthpiece_frames_total", kind="rest") == 2**53 - 1


def test_openmetrics_when_asked_and_the_text_format_otherwise(sessions_ending):
    ctype, text = sessions_ending["openmetrics"]
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    fam = {f.name: f for f in parse_openmetrics(text)}
    assert (
        fam["mouthpiece_frames"].type == "counter"
        and fam["mouthpiece_stage_latency_seconds"].type == "histogram"
    )
    assert "# EOF" not in sessions_ending["running"]


def test_process_metrics_on_each_servers_own_registry(library_factory, landmark_model):
    apps = [
        create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())
        for _ in range(2)
    ]  # two servers in one process: no duplicated series, the global registry untouched

    async def main():
        texts = []
        async with aiohttp.ClientSession() as http:
            for app in apps:
                async with serve_app(app) as url:
                    texts.append(await scrape(http, url))
                    query = "name[]=process_cpu_seconds_total&name[]=mouthpiece_frames_total"
                    async with http.get(f"{url}/metrics?{query}") as r:
                        texts.append(await r.text())
        return texts

    one, one_cpu, two, _ = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    for text in (one, two):
        fam = families(text)
        assert fam["process_cpu_seconds"].type == "counter"
        assert value(text, "process_cpu_seconds_total") > 0
        assert value(text, "process_resident_memory_bytes") > 50 * 2**20
        assert value(text, "process_open_fds") > 3 and value(text, "process_start_time_seconds") > 1.6e9
        assert fam["python_info"].samples[0].labels["implementation"]
        assert "python_gc_collections" in fam and value(text, "mouthpiece_sessions_max") == 4
    assert sorted(families(one_cpu)) == ["mouthpiece_frames", "process_cpu_seconds"]  # ?name[]= selects
    assert b"mouthpiece_" not in generate_latest(REGISTRY)


def test_the_bench_reader_samples_the_server(library_factory, landmark_model):
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())

    async def main():
        async with serve_app(app) as url:
            sampler = MetricsSampler(url)
            await sampler.sample()
            sum(i * i for i in range(3_000_000))  # CPU time between the two samples
            await sampler.sample()
            return sampler

    sampler = asyncio.run(asyncio.wait_for(main(), LIMIT))
    (t0, cpu0, rss0, gpu0), (t1, cpu1, rss1, _) = sampler.samples
    assert cpu1 > cpu0 > 0 and rss0 > 50 * 2**20 and rss1 > 50 * 2**20 and gpu0 is None
    summary = sampler.summary(t0, t1)
    assert summary["cpu_percent"] > 0 and summary["rss_max_mb"] > 50 and summary["samples"] == 2
    # a server before prometheus_client: its own names, %.6g values
    old = "mouthpiece_process_cpu_seconds_total 12.5\nmouthpiece_process_resident_memory_bytes 3.2e+08\n"
    m = parse_metrics(old)
    assert m["mouthpiece_process_cpu_seconds_total"] == [({}, 12.5)]
    assert m["mouthpiece_process_resident_memory_bytes"] == [({}, 3.2e8)]


@pytest.mark.skipif(shutil.which("promtool") is None, reason=NO_PROMETHEUS)
def test_promtool_finds_a_real_scrape_clean(sessions_ending):
    for text in (sessions_ending["running"], sessions_ending["scrapes"][-1]):
        r = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=LIMIT
        )
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def promql(http: aiohttp.ClientSession, api: str, query: str) -> list:
    async with http.get(f"{api}/api/v1/query", params={"query": query}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def scalar(http, api: str, query: str) -> float | None:
    result = await promql(http, api, query)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.skipif(shutil.which("prometheus") is None, reason=NO_PROMETHEUS)
def test_a_prometheus_server_sees_no_counter_reset(library_factory, landmark_model, wav, tmp_path):
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            target = urllib.parse.urlsplit(url).netloc
            config = tmp_path / "prometheus.yml"
            config.write_text(
                json.dumps(  # YAML is a superset of JSON
                    {
                        "global": {"scrape_interval": "200ms", "scrape_timeout": "200ms"},
                        "scrape_configs": [
                            {"job_name": "mouthpiece", "static_configs": [{"targets": [target]}]}
                        ],
                    }
                )
            )
            port = free_port()
            api = f"http://127.0.0.1:{port}"
            log = open(tmp_path / "prometheus.log", "w")  # closed below
            proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:

                async def seen(query: str, want) -> None:  # Prometheus scraped a state
                    async def check():
                        with contextlib.suppress(aiohttp.ClientError, AssertionError):
                            v = await scalar(http, api, query)
                            return v is not None and want(v)

                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 2 * LIMIT
                    while not await check():
                        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                        if loop.time() > deadline:
                            raise TimeoutError(f"Prometheus never saw {query}")
                        await asyncio.sleep(0.1)

                await seen('up{job="mouthpiece"}', lambda v: v == 1)
                sent = 0.0
                for ended in (1, 2):
                    client, s = await run_session(url, server, wav)
                    await seen("mouthpiece_sessions_active", lambda v: v == 1)
                    await seen("mouthpiece_video_frames_sent_total", lambda v, sent=sent: v > sent)
                    async with http.delete(f"{url}/api/sessions/{s.id}") as r:
                        assert r.status == 200
                    await client.close()
                    await seen("mouthpiece_sessions_ended_total", lambda v, ended=ended: v == ended)
                    await seen("mouthpiece_sessions_active", lambda v: v == 0)
                    sent = value(server.metrics.text(), "mouthpiece_video_frames_sent_total")
                out = {"sent": sent}
                names = sorted({k[0] for k in monotonic_series(server.metrics.text())})
                names = [n for n in names if n.startswith("mouthpiece_")]
                out["resets"] = {n: await promql(http, api, f"resets({n}[10m])") for n in names}
                out["samples"] = await scalar(
                    http, api, "count_over_time(mouthpiece_video_frames_sent_total[10m])"
                )
                out["increase"] = await scalar(http, api, "increase(mouthpiece_video_frames_sent_total[10m])")
                out["last"] = await scalar(http, api, "mouthpiece_video_frames_sent_total")
                buckets = 'increase(mouthpiece_stage_latency_seconds_bucket{stage="total"}[10m])'
                out["p50"] = await scalar(http, api, f"histogram_quantile(0.5, sum by (le) ({buckets}))")
                return out
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=LIMIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()

    out = asyncio.run(asyncio.wait_for(main(), 6 * LIMIT))
    for name, result in out["resets"].items():
        assert result, f"Prometheus has no {name}"
        assert all(float(r["value"][1]) == 0 for r in result), (name, result)
    assert out["samples"] >= 10 and out["last"] == out["sent"] > 40
    assert out["increase"] > 0.5 * out["sent"]  # extrapolated over the window, no reset
    assert 0.8 < out["p50"] <= 1.5  # the frames' total is the delay (1 s)
