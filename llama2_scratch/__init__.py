"""The `llama2-scratch` command line."""
