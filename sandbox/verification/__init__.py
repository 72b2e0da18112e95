"""Verification products at run time (DESIGN §9): normalising and validating call
input, answering yes/no from a product's DuckDB file, and detecting enumeration.

Definitions live in ``products.verification``; this package executes them.
"""
