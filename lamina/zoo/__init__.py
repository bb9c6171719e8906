"""Ready-made models and their training recipes (the top floor)."""
