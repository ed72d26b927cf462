"""Thin Prefect tasks over lion_core functions: retries, cache keys from PoolRef hashes, tags.

Tasks exchange PoolRefs, paths and scalars, never DataFrames, models or clients.
"""
