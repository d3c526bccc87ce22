"""Shell snippets that more than one role's facts use."""

# ``show PATH``: the file when it is readable, ending in a newline it may lack (nvidia-ctk
# writes none) so that the next section's marker starts a line of its own. Shell builtins only:
# a sed or cat per file is a process each, about a millisecond of the host's CPU on every run.
SHOW = ('show() { [ -r "$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do '
        "printf '%s\\n' \"$l\"; done < \"$1\"; }")
