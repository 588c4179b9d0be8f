"""flowbench: a benchmark and evaluation harness for autoregressive normalizing flows."""

__version__ = "0.1.0"
