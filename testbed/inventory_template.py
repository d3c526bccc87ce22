"""pyinfra inventory of the disposable test fleet, written by testbed/fleet.py; do not edit.

Per-host settings: put {"HOST": {"setting": value}} (or "*" for every host) in
host_data.json beside this file; they are merged into each host's data on load.
"""
import json as _json
import os as _os

_HOSTS = [
]

_extra_path = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "host_data.json")
_extra = {}
if _os.path.exists(_extra_path):
    with open(_extra_path) as _f:
        _extra = _json.load(_f)

fleet = [(_name, {**_data, **_extra.get("*", {}), **_extra.get(_name, {})})
         for _name, _data in _HOSTS]
