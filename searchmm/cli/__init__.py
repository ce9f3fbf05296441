"""The `searchmm` command, a thin layer over the Python API."""
