"""Autograder for the course notebooks: extraction, sandboxed worker, hidden pytest suites."""
