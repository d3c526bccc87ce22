# sdinfra web UI STAND-IN: modules/cmd_args.py of v1.10.1 (82a973c): one argparse parser with
# every flag of the pinned release (and of its built-in extensions' preload.py files, which
# modules/shared_cmd_options.py adds before parsing). The flags and how many values each takes
# come from webui_flags.txt (roles/webui/webui_flags.txt, which cites its source); the
# defaults that the deploy depends on are cmd_args.py's own.
import argparse
import os

from modules.paths_internal import data_path, models_path  # noqa: F401

parser = argparse.ArgumentParser()

# cmd_args.py: defaults that name files in the data directory.
DEFAULTS = {
    "--ui-config-file": os.path.join(data_path, 'ui-config.json'),
    "--ui-settings-file": os.path.join(data_path, 'config.json'),
    "--embeddings-dir": os.path.join(data_path, 'embeddings'),
    "--data-dir": os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
    "--port": None,
}


def _declare():
    flags = os.path.join(os.path.dirname(os.path.realpath(__file__)), "webui_flags.txt")
    with open(flags, encoding="utf8") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            flag, values = line.split()
            if flag in ("-h", "--help"):  # argparse's own (add_help=True)
                continue
            if values == "0":
                parser.add_argument(flag, action='store_true')
            elif values == "+":
                parser.add_argument(flag, type=str, nargs='+', default=[])
            elif flag == "--port":
                # cmd_args.py: `--port`, type=int: "launch gradio with given server port".
                parser.add_argument(flag, type=int, default=None)
            elif flag == "--styles-file":
                # cmd_args.py: action='append', default=[] (v1.8 and later).
                parser.add_argument(flag, type=str, action='append', default=[])
            else:
                parser.add_argument(flag, type=str, default=DEFAULTS.get(flag))


_declare()
