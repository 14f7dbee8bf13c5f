"""Storage and formats: file discovery, splitting, readers, sinks and output commit."""
