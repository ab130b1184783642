"""Prometheus metrics for event channels: ``xenevt exporter``'s collection (collect.py: one doctor round over
the host, turned into metric families), its loop and HTTP server (serve.py), and what ships beside them
(data/: the alert rules, a Grafana dashboard, a systemd unit).

Built on the public front door only (``xenevt.open``, ``Host.doctor``): a layer above it, below the CLI.
"""
