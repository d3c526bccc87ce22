# sdinfra web UI STAND-IN: modules/shared_cmd_options.py of v1.10.1 (82a973c): the main parse.
# Unknown flags stop the web UI here, after the launcher's "Launching Web UI" line, with
# argparse's usage and "error: unrecognized arguments: ..." on stderr and exit status 2:
#     if os.environ.get('IGNORE_CMD_ARGS_ERRORS', None) is None:
#         cmd_opts = parser.parse_args()
#     else:
#         cmd_opts, _ = parser.parse_known_args()
import os

from modules import cmd_args

parser = cmd_args.parser

if os.environ.get('IGNORE_CMD_ARGS_ERRORS', None) is None:
    cmd_opts = parser.parse_args()
else:
    cmd_opts, _ = parser.parse_known_args()

# shared_cmd_options.py: any of these makes the web UI "non-local".
cmd_opts.webui_is_non_local = any([cmd_opts.share, cmd_opts.listen, cmd_opts.ngrok, cmd_opts.server_name])
cmd_opts.disable_extension_access = cmd_opts.webui_is_non_local and not cmd_opts.enable_insecure_extension_access
