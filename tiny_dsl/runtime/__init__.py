"""Runtime support for executing scenarios: model providers, the LLM-call cache and client."""
