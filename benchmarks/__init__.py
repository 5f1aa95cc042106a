"""Benchmarks of latentreason: memory, speed, overhead and accuracy; `python -m benchmarks run`."""
