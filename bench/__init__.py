"""Benchmarks (not tests); run each script directly, results go to RESULTS.md."""
