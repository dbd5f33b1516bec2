"""Developer tools: run from a checkout, never imported by the library (src/mnnrepro)."""
