"""Building: nvcc invocations and the TensorRT header lookup."""
