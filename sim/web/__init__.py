"""The tuning workbench (`outage-sim tune FILE`): a local server for one scenario file and
the page it serves, which re-runs the scenario as its parameters change.

`app.py` holds the routes and the JSON API, `job.py` what one run does, `runner.py` the
worker processes that run them (a newer run abandons an older one), `controls.py` the page's
controls from the scenario and its schema, `save.py` the tuned file, `serve.py` the server.
"""
