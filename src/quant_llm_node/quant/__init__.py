"""Quantization math: uniform INT8/INT4, NF4, ggml Q8_0/Q4_0, GPTQ, AWQ, metrics, GGUF tensor loading."""
