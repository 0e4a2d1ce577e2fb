"""Seeing the system: what pool processes count and report (``counting``, ``reporter``,
``wire``), what the supervisor adds up and decides (``totals``, ``health``), reads from
Redis (``fleet``) and serves on ``--metrics-port`` (``hub``, ``exporter``, ``server``), and
how ``seawall health`` asks it (``probe``). Loaded by the runtime and the CLI only: the
declaration API (``import workers``) imports none of it."""
