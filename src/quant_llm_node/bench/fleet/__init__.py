"""Fleet benchmark (``quant-llm-bench fleet``): N robot node processes against one site server."""
