"""Search: query terms, filters, ranking against an index, hits, near-duplicates."""
