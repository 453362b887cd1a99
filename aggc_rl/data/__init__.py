"""Dataset builders that write verl-ready parquet files (GSM8K, Knights and Knaves).

Each module keeps the row logic in pure, importable functions and a thin ``python -m`` CLI on top.
"""
