"""Datasets: lists of Problems (MATH500/GSM8K jsonl files, the synthetic world)."""
