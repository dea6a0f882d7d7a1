"""`python -m streams`: run one streams worker."""

from streams.app import run_streams

if __name__ == "__main__":
    run_streams()
