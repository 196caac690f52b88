"""Curvature of small transformers that learn five-digit addition.

The modules are small and import their heavy dependencies (torch,
transformer_lens, curvlinops) themselves, so that the Snakefile can import
`experiments` without paying for them.
"""
