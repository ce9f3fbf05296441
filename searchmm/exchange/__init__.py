"""Embeddings that travel: the store's vectors and metadata in the layout clip-retrieval and
autofaiss read (`export`), shard by shard in bounded memory."""
