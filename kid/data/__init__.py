"""Text-to-SQL data: Spider-format readers, schemas, prompts, pipelines."""
