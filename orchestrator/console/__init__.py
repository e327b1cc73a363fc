"""`orchestrator console`: a small, read-only web console over the same database.

Starlette, Jinja2 and uvicorn are imported only here and below, never by the
command line at start-up: `orchestrator status` does not pay for a web server.
"""
