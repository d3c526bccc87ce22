"""
The models of webui_models only, in place and verified by sha256, without the rest of the web
UI: `pyinfra inventories/home.py deploy/models.py`. With cache_host, the cache host fetches each
model once and the other hosts copy it from there (roles.cache), as deploy/site.py does.
"""

from roles import cache, webui
from roles.settings import validate

validate(cache.settings, webui.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host has each model before any host asks it for one (roles.cache).
cache.install()
webui.models()
