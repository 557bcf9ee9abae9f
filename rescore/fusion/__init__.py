"""Deep fusion: a trained bridge from frozen Whisper encoder states into a causal LM (see docs/design.md)."""
