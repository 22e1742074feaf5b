"""Routing rules and their decisions (issue 7). The evaluator is sans-IO."""
