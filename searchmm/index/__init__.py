"""FAISS indexes, caches of the store: specs, the wrapper, its file format, keeping in sync."""
