#!/bin/sh
# Managed by sdinfra. The container's entrypoint, mounted from the project directory (a prebuilt
# image runs it too). The web UI keeps its data in /data (--data-dir): the host's data/, with
# models/ and outputs/ mounted inside it.
set -e
cd /webui
# seed FROM TO: FROM's files and links (a Hugging Face cache links its snapshots to its blobs)
# copied into TO, never over one there.
seed() {
    [ -d "$1" ] || return 0
    (cd "$1" && find . -type f -o -type l) | while IFS= read -r file; do
        { [ -e "$2/$file" ] || [ -L "$2/$file" ]; } && continue
        mkdir -p "$2/${file%/*}" && cp -P -p "$1/$file" "$2/$file" \
            || echo "sdinfra: could not copy $1/$file into $2" >&2
    done
}
# What the image carries under /webui/models (VAE-approx's model.pt, ...) goes into the mounted
# models directory: no mount hides it. The Hugging Face files the build fetched (the CLIP
# tokenizer and text encoder config the first model load asks for) go into the data
# directory's cache, where the web UI looks (HF_HOME) and keeps what it fetches later.
seed /webui/models /data/models
seed /sdinfra/hf-cache "${HF_HOME:-/data/cache/huggingface}"
# sdinfra's launch.py runs the web UI's, handing it the API login in-process.
exec python /sdinfra/launch.py
