# sdinfra web UI STAND-IN: modules/launch_utils.py of v1.10.1 (82a973c), the parts a start
# goes through: the early parse_known_args, prepare_environment's version lines and torch GPU
# test, --exit, and start()'s "Launching Web UI with arguments" line.
import json
import os
import subprocess
import sys

from modules import cmd_args
from modules.paths_internal import data_path

# launch_utils.py: `args, _ = cmd_args.parser.parse_known_args()` at import, before anything
# else: a flag missing its value or a bad --port stops here (argparse, exit status 2);
# unknown flags pass until shared_cmd_options parses for real.
args, _ = cmd_args.parser.parse_known_args()

python = sys.executable
VERSION = os.environ.get("SDINFRA_STANDIN_VERSION", "v1.10.1")
KNOBS_FILE = "sdinfra-standin.json"


def knobs():
    """The tests' control file in the data directory, with the entry for this version over it."""
    path = os.path.join(data_path, KNOBS_FILE)
    try:
        with open(path, encoding="utf8") as handle:
            found = json.load(handle)
    except FileNotFoundError:
        return {}
    merged = {k: v for k, v in found.items() if k != "versions"}
    merged.update(found.get("versions", {}).get(VERSION, {}))
    return merged


def check_run_python(code: str) -> bool:
    # launch_utils.py check_run_python(): a child interpreter, its exit status only.
    result = subprocess.run([python, "-c", code], capture_output=True, shell=False)
    return result.returncode == 0


def prepare_environment():
    # launch_utils.py prepare_environment(): the version lines, then the torch GPU test.
    print(f"Python {sys.version}")
    print(f"Version: {VERSION}")
    print("Commit hash: sdinfra-standin")
    if not args.skip_torch_cuda_test and not check_run_python("import torch; assert torch.cuda.is_available()"):
        raise RuntimeError(
            'Torch is not able to use GPU; '
            'add --skip-torch-cuda-test to COMMANDLINE_ARGS variable to disable this check'
        )
    # The stand-in installs and clones nothing: the real image did that at build time.
    if "--exit" in sys.argv:
        print("Exiting because of --exit argument")
        exit(0)


def start():
    # launch_utils.py start(): every argument, as the process holds them, on one line.
    print(f"Launching {'API server' if '--nowebui' in sys.argv else 'Web UI'} with arguments: {' '.join(sys.argv[1:])}")
    import webui
    if '--nowebui' in sys.argv:
        webui.api_only()
    else:
        webui.webui()
