"""MultiPL-E evaluation: problems -> completions -> sandboxed execution -> pass@k.

One module per job, so each can be read (and replaced) on its own:

- `problems`   load MultiPL-E prompt files from a folder (v3 or `latest/`) or the Hugging Face hub
- `generate`   Hugging Face (batched, KV cache) or OpenAI-compatible server completions, cut at
               the language's stop tokens, written as MultiPL-E completion files
- `languages`  per-language compile/run commands, time limits and status rules (MultiPL-E's)
- `toolchains` which toolchains are usable here, the C++ precompiled header, Debian packages
- `sandbox`    bubblewrap runner with rlimits, an unprivileged uid and a process-group kill
- `execute`    run completion files in parallel, resumably, writing `.results.json(.gz)` files
- `passk`      the unbiased pass@k estimator
- `report`     tables, a JSON summary, a PNG chart, and side-by-side comparison of result folders
- `formats`    MultiPL-E file formats and atomic writes

Nothing here imports torch at module level: only `generate` needs it, inside its functions.
"""
