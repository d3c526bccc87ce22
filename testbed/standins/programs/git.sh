#!/bin/sh
# sdinfra STAND-IN for git in the stand-in python:3.10-slim-bookworm image (TEST ONLY): the four
# commands roles/webui/templates/Dockerfile.j2 runs to fetch the web UI at a pinned release
# (git init; git remote add origin URL; git fetch --depth 1 origin REF; git checkout FETCH_HEAD).
# The fetch downloads URL/standin-archive/REF.tar from the stand-in "internet" server (a real
# fetch's pack: the web UI's tree, built by testbed/standins/image_build.py); the checkout
# unpacks it. rev-parse prints the stand-in's commit, as the launcher asks at each start.
set -e
case "$1" in
    init) mkdir -p .git ;;
    remote) [ "$2" = add ] || { echo "sdinfra stand-in git: remote $2 is not stood in" >&2; exit 1; }
            printf '%s\n' "$4" > .git/sdinfra-origin ;;
    fetch) eval "ref=\${$#}"
           url=$(cat .git/sdinfra-origin)
           wget -q -O .git/sdinfra-fetch.tar "$url/standin-archive/$ref.tar" ||
               { echo "fatal: couldn't find remote ref $ref (sdinfra stand-in: $url)" >&2; exit 128; } ;;
    checkout) tar -x -f .git/sdinfra-fetch.tar && rm -f .git/sdinfra-fetch.tar ;;
    rev-parse) echo 0000000000000000000000000000000000000000 ;;
    *) echo "sdinfra stand-in git: $1 is not stood in" >&2; exit 1 ;;
esac
