"""Search across every channel a caller may read (docs/search.md)."""
