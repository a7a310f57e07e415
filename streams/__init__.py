"""The engine: the pure run state machine (``machine``, ``waiters``), the processors that
drive it (``processors``) on the Kafka runtime (``kafka``), flow control (``flow``), the
read model, the HTTP API and metrics.

Importing ``streams.machine`` imports no Kafka client.
"""
