"""quiesce: a load balancer that takes servers out of service without losing a request."""

__version__ = "0.1.0"
__all__ = ["__version__"]
