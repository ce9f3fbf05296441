"""Sources: what is on disk (`scan`), file digests and reasons (`files`), decoding images
(`images`, `loader`) and reading text collections (`texts`)."""
