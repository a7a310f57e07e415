"""The engine: the pure run state machine and the Faust agents that drive it.

Importing this package does not import Faust; ``streams.app`` does.
"""
