"""A job that does nothing: the raw-RQ baseline of benchmarks/throughput.py."""


def noop(i: int) -> int:
    """Return the argument."""
    return i
