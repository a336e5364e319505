"""Writing a run's outputs: the writer, charts (the only matplotlib importer), pages,
text, compare and provenance."""
