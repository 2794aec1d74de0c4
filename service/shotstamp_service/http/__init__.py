"""The HTTP face: the aiohttp application, API v1, keys and limits, the dispute desk.

The only layer that knows status codes: it maps the domain's errors to HTTP answers.
"""
