"""The representative calibration set for full-integer quantization."""
