"""multipl-moe: upcycle a dense code LLM into a hybrid token+segment MoE (MultiPL-MoE)."""

__version__ = "0.1.0"
