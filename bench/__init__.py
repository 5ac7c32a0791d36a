"""The R-Adapt Serve benchmark: ``radapt bench`` drives a real ``radapt serve`` over HTTP.

Modules, one role each:
``images`` (the request images), ``loadgen`` (concurrent clients, latency statistics),
``server`` (start a server subprocess, wait for readiness, read its memory), ``limit`` (the
in-process batched forward), ``peer`` (infinity-emb in its own virtual environment),
``scenarios`` (throughput comparisons), ``swap`` (hot-swap and adapter memory), ``promscrape``
(the server's /metrics), ``machine`` (CPU, versions, the run's config, foreign load), ``report``
(RESULTS.md and JSON, every section), ``run`` (one run); ``commands`` holds ``radapt bench`` and
``radapt soak``, which ``radapt`` finds through entry points.
"""
