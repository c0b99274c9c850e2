"""The instruction-following evaluation (29 code-decided checks), the ranking across models, and the Japanese
quality report. See docs/evaluation.md."""
