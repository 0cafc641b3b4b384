"""From conveyor video to per-underbody verdicts (paper 8.2-8.4): bundle, segment, inspect, alert."""
