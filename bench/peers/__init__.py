"""Peers of stepstream in the benchmarks; each script runs in its own virtual environment
(``bench/.venvs/NAME``, made by ``python -m bench.compare``) and imports only the stdlib
helpers of ``bench.measure`` from this repository."""
