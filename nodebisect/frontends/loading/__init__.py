"""Model files, factories and pickles + inputs -> ``LoadedModel`` (and the hints when they do not load)."""
