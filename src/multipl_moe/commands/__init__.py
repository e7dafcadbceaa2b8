"""Subcommands of the `multipl-moe` CLI, one module each."""
