"""Side-by-side benchmarks of lamina and PyTorch on the workloads of shared/bench/WORKLOADS.md."""
