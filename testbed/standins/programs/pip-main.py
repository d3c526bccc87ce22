"""sdinfra STAND-IN for pip in the stand-in python:3.10-slim-bookworm image (TEST ONLY), run as
``python -m pip install ...`` by roles/webui/templates/Dockerfile.j2.

What a real build costs, in kind: ``torch==VERSION[+BUILD]`` with an ``--extra-index-url`` (or
``--index-url``) downloads INDEX/torch-VERSION.whl from the stand-in "internet" server (a few
hundred MB, as PyTorch's wheels are GBs), checks it against INDEX/torch-VERSION.whl.sha256 as
pip checks a hash, and records the build in
/usr/lib/python3/dist-packages/torch-standin-build.txt (a random id: every build makes an image
of its own, a pull keeps the builder's). The wheel itself is not kept (the image stays small;
the stand-in torch is already in the image). Every other requirement is taken as satisfied.
"""
import os
import sys

RECORD = "/usr/lib/python3/dist-packages/torch-standin-build.txt"


def main(argv):
    if not argv or argv[0] != "install":
        print("sdinfra stand-in pip: only `pip install` is stood in", file=sys.stderr)
        return 1
    index, wanted, i = None, [], 1
    while i < len(argv):
        if argv[i] in ("--extra-index-url", "--index-url", "-i") and i + 1 < len(argv):
            index, i = argv[i + 1], i + 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            wanted.append(argv[i])
            i += 1
    for requirement in wanted:
        name, _, version = requirement.partition("==")
        if name != "torch" or not index:
            print(f"Requirement already satisfied: {requirement} (sdinfra stand-in)")
            continue
        url = f"{index.rstrip('/')}/torch-{version.split('+')[0]}.whl"
        print(f"Downloading {url} (sdinfra stand-in)", flush=True)
        status = os.system(
            f"wget -q -O /tmp/torch.whl '{url}' && wget -q -O /tmp/torch.whl.sha256 '{url}.sha256'"
            " && echo \"$(cat /tmp/torch.whl.sha256)  /tmp/torch.whl\" | sha256sum -c -s"
            f" && wc -c < /tmp/torch.whl > {RECORD}.size"
            f" && cat /proc/sys/kernel/random/uuid > {RECORD}")
        os.system("rm -f /tmp/torch.whl /tmp/torch.whl.sha256")
        if status != 0:
            print(f"ERROR: Could not install {requirement}: {url} was not downloaded or its "
                  "sha256 does not match", file=sys.stderr)
            return 1
        print(f"Successfully installed torch-{version} (sdinfra stand-in)")
    return 0


sys.exit(main(sys.argv[1:]))
