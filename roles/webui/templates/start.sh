#!/bin/sh
# Managed by sdinfra. Starts the web UI with the flags from webui.env (COMMANDLINE_ARGS).
# The API login is read from the mounted secret into the environment here, so that it never
# stands on a command line (launch.py reads COMMANDLINE_ARGS itself).
set -e
if [ -n "$SDINFRA_API_AUTH" ] && [ -r /run/secrets/webui-auth ]; then
    COMMANDLINE_ARGS="$COMMANDLINE_ARGS --api-auth $(grep -v '^#' /run/secrets/webui-auth | paste -sd, -)"
    export COMMANDLINE_ARGS
fi
exec python launch.py
