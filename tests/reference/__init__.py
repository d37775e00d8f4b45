"""Plain references the tests hold the library against, and the benches time ours against (``bench/`` imports them;
the tests never import a bench script)."""
