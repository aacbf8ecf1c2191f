"""The umT5 text encoder of Wan2.1: checkpoint loading, tokenizer and the prompt-embedding cache."""
