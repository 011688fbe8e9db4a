"""The web UI for operators and managers: sign-in, pages, server-drawn report charts.

Pages are shells rendered by jinja2; their data comes from the JSON API in the browser.
Register with ``pbx_bridge.web.routes.setup(app)``.
"""
