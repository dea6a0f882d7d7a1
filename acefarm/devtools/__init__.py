"""Developer tooling above the services: the `acefarm` command, the local dev stack, the embedded broker."""
