"""queuekit's own backends, one module each; none imports another.

Each module defines a queue class constructible with typed keyword arguments and a
``from_url`` opener that :mod:`queuekit._registry` imports on first use.
"""
