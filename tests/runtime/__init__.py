"""Unit tests of the long-job runtime (acefarm.runtime)."""
