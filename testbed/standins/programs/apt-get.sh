#!/bin/sh
# sdinfra STAND-IN for apt-get in the stand-in python:3.10-slim-bookworm image (TEST ONLY):
# roles/webui/templates/Dockerfile.j2 installs git, wget, libgl1 and libglib2.0-0; the stand-in
# image has what the stand-in web UI needs (busybox's wget, the stand-in git), so nothing is
# fetched and nothing installed.
echo "sdinfra stand-in apt-get: $* (nothing to do: the stand-in image has what it needs)"
