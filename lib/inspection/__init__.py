"""From conveyor video to per-underbody verdicts (paper 8.2-8.4): bundle, segment, inspect, alert."""

#: torch / OpenCV / ONNX Runtime threads of ``inspect``: one. Measured (docs/inspection.md,
#: benchmarks/inspect_load.py): with a busy neighbour process on the cores, more threads collapse
DEFAULT_THREADS = 1
