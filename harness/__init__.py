"""The loopback harness: real processes for tests, the demo and the benchmarks (not installed)."""
