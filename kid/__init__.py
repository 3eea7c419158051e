"""kid: knowledge distillation of text-to-SQL language models (KID and baselines)."""
