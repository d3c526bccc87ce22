"""roles.hostfacts: the facts the roles read, read ahead in one command and handed out once."""

import subprocess

from pyinfra.api import FactBase

from roles.hostfacts import Ahead, HostFacts


class Lines(FactBase):
    """A fact that prints its own "### ..." sections and leaves a variable and a positional
    parameter set, as the roles' facts do."""

    ahead = "lines"

    def command(self, word=""):
        return f"echo '### lines'; echo '### inner'; seen=1; set -- left; echo {word}"

    def process(self, output):
        return list(output)


class Leaks(FactBase):
    """A fact whose output would change if the one before it leaked its shell state."""

    ahead = "leaks"

    def command(self):
        return 'echo "seen=${seen:-unset} args=$#"'

    @staticmethod
    def default():
        return ["nothing printed"]

    def process(self, output):
        return list(output)


class Blank(FactBase):
    """A fact whose output ends in blank lines (a file shown as it is: /etc/environment's)."""

    ahead = "blank"

    def command(self):
        return "echo '### blank'; printf 'last\\n\\n\\n'"

    def process(self, output):
        return list(output)


class Host:
    """What HostFacts asks of a pyinfra host: get_fact, run here for real with sh."""

    def __init__(self):
        self.asked = []

    def get_fact(self, cls, **kwargs):
        self.asked.append(cls.__name__)
        fact = cls()
        output = subprocess.run(["sh", "-c", fact.command(**kwargs)], capture_output=True,
                                text=True, check=True).stdout.splitlines()
        return fact.process(output) if output else fact.default()


def test_each_fact_reads_its_own_part_in_a_shell_state_of_its_own():
    host = Host()
    known = HostFacts(host)
    known.read_ahead((Lines, {"word": "hello"}), None, (Leaks, {}))
    assert host.asked == ["Ahead"]
    # "### inner" is Lines' own line, not a cut; Leaks saw neither Lines' variable nor its $1
    assert known.fact(Lines, {"word": "hello"}) == ["### lines", "### inner", "hello"]
    assert known.fact(Leaks, {}) == ["seen=unset args=0"]
    assert host.asked == ["Ahead"]


def test_a_fact_is_handed_out_once_and_only_for_the_arguments_read():
    host = Host()
    known = HostFacts(host)
    known.read_ahead((Lines, {"word": "hello"}), (Leaks, {}))
    assert known.fact(Lines, {"word": "other"}) == ["### lines", "### inner", "other"]
    assert host.asked == ["Ahead", "Lines"]
    known.fact(Lines, {"word": "hello"})
    known.fact(Lines, {"word": "hello"})  # a second ask reads the host again
    assert host.asked == ["Ahead", "Lines", "Lines"]


def test_a_part_the_host_did_not_print_is_asked_on_its_own():
    fact = Ahead()
    fact.command(asks=((Lines, {"word": "x"}), (Leaks, {})))
    # the host printed Lines' part only (a command cut short, a fake that knows one fact)
    found = fact.process(["### ahead", "### ahead-lines", "### lines", "x"])
    assert list(found.values()) == [["### lines", "x"]]
    host = Host()
    known = HostFacts(host)
    known._ahead = found
    assert known.fact(Leaks, {}) == ["seen=unset args=0"] and host.asked == ["Leaks"]


def test_an_empty_part_reads_as_the_facts_default_as_pyinfra_reads_no_output():
    fact = Ahead()
    fact.command(asks=((Leaks, {}),))
    assert list(fact.process(["### ahead", "### ahead-leaks"]).values()) == [["nothing printed"]]


def test_one_fact_is_not_worth_a_bundle():
    host = Host()
    HostFacts(host).read_ahead((Leaks, {}), None)
    assert host.asked == []


def test_a_guarded_fact_is_read_only_where_its_shell_test_holds():
    host = Host()
    known = HostFacts(host)
    known.read_ahead((Lines, {"word": "here"}, "[ -d / ]"), (Leaks, {}, "[ -e /nonexistent ]"))
    assert host.asked == ["Ahead"]
    assert known.fact(Lines, {"word": "here"}) == ["### lines", "### inner", "here"]
    assert host.asked == ["Ahead"]
    assert known.fact(Leaks, {}) == ["seen=unset args=0"]  # not printed there: asked now
    assert host.asked == ["Ahead", "Leaks"]


def test_a_guess_that_came_true_is_not_asked_again_and_a_wrong_one_costs_one_command():
    host = Host()
    known = HostFacts(host)
    known.read_ahead((Lines, {"word": "guessed"}), (Leaks, {}))  # the preflight's command
    # Once the plan is known: Leaks as guessed, Lines with other arguments.
    known.read_ahead((Lines, {"word": "planned"}), (Leaks, {}))
    assert host.asked == ["Ahead"]  # one fact left: not worth a bundle, asked when needed
    assert known.fact(Leaks, {}) == ["seen=unset args=0"]
    assert known.fact(Lines, {"word": "planned"})[-1] == "planned"
    assert host.asked == ["Ahead", "Lines"]
    host.asked.clear()
    known = HostFacts(host)
    known.read_ahead((Lines, {"word": "guessed"}), (Leaks, {}))
    known.read_ahead((Lines, {"word": "guessed"}), (Leaks, {}))  # every guess came true
    assert host.asked == ["Ahead"]


def test_a_part_not_asked_for_does_not_run_into_the_part_before_it():
    # A host (or a fake) that prints a part nobody asked for after an asked one.
    fact = Ahead()
    fact.command(asks=((Lines, {"word": "x"}),))
    found = fact.process(["### ahead", "### ahead-lines", "### lines", "x",
                          "### ahead-leaks", "seen=1 args=1"])
    assert list(found.values()) == [["### lines", "x"]]


def test_the_last_part_keeps_its_blank_lines():
    # Ahead prints the parts in one go, from a command substitution, which drops trailing
    # newlines: the end marker after the last part keeps them its own.
    host = Host()
    known = HostFacts(host)
    known.read_ahead((Leaks, {}), (Blank, {}))
    assert known.fact(Blank, {}) == ["### blank", "last", "", ""]
    assert known.fact(Leaks, {}) == ["seen=unset args=0"]
