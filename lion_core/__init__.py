"""Lion adversarial distillation: the algorithm, storage and tooling, free of any Prefect import."""
