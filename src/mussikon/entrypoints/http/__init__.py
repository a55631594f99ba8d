"""The marketplace over HTTP: an ASGI application (FastAPI) served by `mussikon serve`.

`create_api` builds it; other parts of the same process (an operator dashboard) add their
routers to it and use `state.api_state` and `security.require` as the routes here do.
"""
