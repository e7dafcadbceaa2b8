"""Small helpers every layer uses (atomic writes, Markdown tables); they import nothing of ours
except `multipl_moe.errors`."""
