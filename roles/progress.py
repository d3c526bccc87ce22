"""
Long steps that show they move: a command whose output pyinfra prints as it arrives, without -v.

pyinfra reads a command's output line by line as the host sends it, but prints it only with -v
(``state.print_output``); a multi-GB model download or an image build then runs with no sign of
life. ``Shown`` is a shell command that always prints its lines as they come, each prefixed with
the host's name; the commands given to it print a line every few seconds themselves (the bytes
downloaded so far, the build's steps, a ``ticking`` counter) and how long they took.

.. code:: python

    from roles.progress import Shown, ticking
    yield Shown(ticking("loading image", "docker load -i /var/tmp/webui.tar"))
"""

from __future__ import annotations

import os
import shlex
import time

from pyinfra import logger
from pyinfra.api import FileUploadCommand, StringCommand

EVERY = 5  # seconds between the lines of ``ticking``


class Shown(StringCommand):
    """A shell command whose output is printed while it runs, with or without -v."""

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        return host.run_shell_command(self, print_output=True, print_input=state.print_input,
                                      **connector_arguments)


def ticking(label: str, command: str, every: int = EVERY) -> str:
    """Shell: ``command``, with "LABEL: N s" every ``every`` seconds while it runs and
    "LABEL: done in N s" after; exits with its status."""
    return (f"( {command} ) & pid=$! s=0; "
            "trap 'kill $pid 2>/dev/null; exit 130' HUP INT TERM; "
            "while kill -0 $pid 2>/dev/null; do sleep 1; s=$((s + 1)); "
            f"[ $((s % {every})) -eq 0 ] && kill -0 $pid 2>/dev/null && echo \"{label}: $s s\"; "
            "done; wait $pid; rc=$?; "
            f"[ $rc -eq 0 ] && echo \"{label}: done in $s s\"; exit $rc")


def room(directory: str, size: int, what: str) -> str:
    """Shell: fail, saying the disk is full, unless ``directory``'s file system has ``size``
    bytes free for ``what``. A full disk otherwise surfaces from SFTP as "size mismatch in put!
    0 != 225", which reads like a network fault, and leaves an empty file behind."""
    need = size // 1024 + 1
    q_dir = shlex.quote(directory)
    full = shlex.quote(f"no space left on device: {directory} has ")
    needs = shlex.quote(f" KiB free, {what} needs {need} KiB")
    return (f"a=$(df -Pk {q_dir} | awk 'NR == 2 {{ print $4 }}'); "
            f"[ \"${{a:-0}}\" -ge {need} ] || {{ echo {full}\"${{a:-0}}\"{needs} >&2; exit 1; }}")


class _Counted:
    """A file read by SFTP, saying every EVERY seconds how much of it was sent."""

    def __init__(self, handle, size: int, label: str, say):
        self.handle, self.size, self.label, self.say = handle, size, label, say
        self.sent = 0
        self.started = self.last = None
        self.done = False

    def seek(self, *args):
        self.sent = 0
        return self.handle.seek(*args)

    def read(self, *args):
        data = self.handle.read(*args)
        now = time.monotonic()
        if self.started is None:
            self.started = self.last = now
        self.sent += len(data)
        if now - self.last >= EVERY and data:
            self.last = now
            self.say(f"{self.label}: {self.sent >> 20} of {self.size >> 20} MiB, "
                     f"{now - self.started:.0f} s")
        elif not data and not self.done:
            self.done = True
            self.say(f"{self.label}: {self.size >> 20} MiB in {now - self.started:.0f} s")
        return data

    def __getattr__(self, name):
        return getattr(self.handle, name)


class Upload(FileUploadCommand):
    """``FileUploadCommand`` of a large local file ``src``, saying how much was sent every few
    seconds (counted as SFTP reads it, on the controller) and how long it took."""

    def __init__(self, src: str, dest: str, label: str):
        super().__init__(src, dest)
        self.path, self.label = src, label

    def execute(self, state, host, connector_arguments):
        with open(self.path, "rb") as handle:
            self.src = _Counted(handle, os.path.getsize(self.path), self.label,
                                lambda line: logger.info(f"{host.print_prefix}{line}"))
            try:
                return super().execute(state, host, connector_arguments)
            finally:
                self.src = self.path
