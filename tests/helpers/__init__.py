"""Test helpers: tiny finished runs, a TF Serving stand-in, and distribution subprocesses."""
