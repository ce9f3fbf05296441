"""The Engine: the public facade over one index directory's store, indexes and model."""
