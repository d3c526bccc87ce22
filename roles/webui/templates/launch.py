# Managed by sdinfra. Runs the web UI's launch.py (in /webui) with the API login given to the web
# UI in-process: never in its arguments (`ps`), in COMMANDLINE_ARGS or another environment
# variable (`docker inspect`), nor in the launcher's "Launching Web UI with arguments: ..." line
# (`docker logs`), which prints every argument (modules/launch_utils.py start(), v1.10.1).
import os
import runpy
import sys

SECRET = "/run/secrets/webui-auth"

sys.path[0] = os.getcwd()  # what `python launch.py` in /webui would have
if os.environ.get("SDINFRA_API_AUTH") == "1":
    with open(SECRET, encoding="utf8") as handle:
        logins = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    # v1.10.1 declares --api-auth on modules/cmd_args.py's `parser` (default None); launch_utils.py
    # and shared_cmd_options.py parse with that same parser, and modules/api/api.py reads
    # shared.cmd_opts.api_auth when the API starts: the default set here is what it reads, as if
    # the flag had been given. Importing cmd_args first appends COMMANDLINE_ARGS to sys.argv
    # (modules/paths_internal.py), as launch.py's own imports would.
    from modules import cmd_args

    cmd_args.parser.set_defaults(api_auth=",".join(logins))
# sys.argv[0] stays this file, so that the web UI's restart (os.execv of sys.argv) comes back
# here; argparse names it launch.py either way.
runpy.run_path("launch.py", run_name="__main__")
