"""streams: the faust app that folds task events into the status table (see docs/streams.md).

`streams.app.run_streams(settings)` runs one worker (the `acefarm streams` command); `streams.fold`
holds the pure fold rules.
"""
