"""The engine's stream processors, one module each (DESIGN §4): trigger, orchestrator,
executor, waiter matcher, delay forwarder. Each decodes its input records, calls pure
code, and hands what it decided to its task as records."""
