"""The sans-IO core: state machines, classifier vocabulary, events and pool rules.

Nothing under ``quiesce.core`` imports asyncio or sockets; every function that depends on time
takes ``now`` (seconds, monotonic or wall as the caller decides) as an argument.
"""
