"""The pieces of ``benchmarks/live_latency.py`` (the entry point: its options, its plan of runs and
the module docstring that says what is measured): :mod:`.suites` (the named suites, constants and the
microphone input), :mod:`.server` (the in-process server and the probes on its sessions),
:mod:`.clients` (the WebRTC clients' child process and the records they send back),
:mod:`.analysis` (a record + probe -> per-frame latencies, A/V offset and a run's summary),
:mod:`.run` (one configuration: server up, warm-up, the measured clients, the analysis) and
:mod:`.report` (the Markdown file and the console table).
"""
