"""Helpers of scripts/download_model.py: which files of a Hub repo to fetch, and the catalog entry it adds."""
