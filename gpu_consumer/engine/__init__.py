"""Engines: what turns one generation job into audio. `base` holds the protocol."""
