"""Measuring flows: device-synchronised timing and counting (parameters, FLOPs, memory)."""
