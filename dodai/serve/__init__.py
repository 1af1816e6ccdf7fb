"""``dodai serve``: an OpenAI-compatible HTTP server with continuous batching and a web chat.

- :mod:`dodai.serve.protocol` — the OpenAI request fields, checked, and the error object;
- :mod:`dodai.serve.scheduler` — the worker thread that runs the one decode loop over all requests;
- :mod:`dodai.serve.app` — the Starlette routes, the web chat page (``static/index.html``), metrics;
- :mod:`dodai.serve.server` — putting it together: model + paged backend + scheduler + uvicorn.
"""
