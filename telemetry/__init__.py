"""What Parley tells its operator about itself: the numbers its hot paths count
(counters.py, read by the Prometheus collectors in handlers/metrics.py), the context
that log records carry (context.py) and the JSON form of a log record (logs.py).

It imports nothing of Parley's, so every layer may use it, as every layer uses `logging`.
"""
