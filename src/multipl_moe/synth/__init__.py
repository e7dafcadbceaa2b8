"""`multipl-moe synth`: MultiPL-T's pipeline (Cassano et al., OOPSLA 2024) for validated
synthetic training data in low-resource languages.

Python functions with docstrings (`extract`) get unit tests written by a model and checked in
the sandbox (`testgen`, `pyexec`), are kept when those tests cover them (`pyexec`, coverage.py),
are translated with their tests into a target language by rules (`translate`), get solutions in
that language from the model that must pass the translated tests (`solutions`, through the
evaluation executor), and are deduplicated into a dataset that `multipl-moe train` reads
(`dedupe`). `pipeline` holds the stages; `stage` and `journal` make each one resumable.
"""
