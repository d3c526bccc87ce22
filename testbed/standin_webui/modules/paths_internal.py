# sdinfra web UI STAND-IN: modules/paths_internal.py of v1.10.1 (82a973c).
import argparse
import os
import shlex
import sys

# paths_internal.py: `commandline_args = os.environ.get('COMMANDLINE_ARGS', "")` and
# `sys.argv += shlex.split(commandline_args)`: the variable is split as a shell would and
# appended after the launcher's own arguments, once, when the module is first imported.
commandline_args = os.environ.get('COMMANDLINE_ARGS', "")
sys.argv += shlex.split(commandline_args)

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)

# paths_internal.py: a parser of its own reads --data-dir (default: the script's directory)
# and --models-dir (default: DATA/models) before the main parser, with parse_known_args.
parser_pre = argparse.ArgumentParser(add_help=False)
parser_pre.add_argument("--data-dir", type=str, default=os.path.dirname(modules_path))
parser_pre.add_argument("--models-dir", type=str, default=None)
cmd_opts_pre = parser_pre.parse_known_args()[0]

data_path = cmd_opts_pre.data_dir
models_path = cmd_opts_pre.models_dir if cmd_opts_pre.models_dir else os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
