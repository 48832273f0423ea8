"""Call analyzers: implementations of ``callpipe.analysis.Analyzer``.

``rules`` is the local, deterministic analyzer (lexicons and rules, no model, no network).
"""
