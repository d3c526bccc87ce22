"""sdinfra roles: pyinfra packaged deploys, one folder per concern."""


def _cache_global_arguments() -> None:
    """
    pyinfra (3.10) works out its global arguments with ``typing.get_type_hints(AllArguments)``
    anew for every fact it reads and every operation called: ~0.4 ms each (it evaluates the
    string annotations every time), a third of the controller's time per host on a converged
    run, for the same answer each time (AllArguments is a TypedDict fixed at import). Ask once.
    A pyinfra without that function is left as it is.
    """
    try:
        from pyinfra.api import arguments, facts
    except ImportError:  # pragma: no cover - pyinfra is a dependency
        return
    original = getattr(arguments, "all_global_arguments", None)
    if original is None or getattr(original, "sdinfra_cached", False):
        return
    known = tuple(original())

    def all_global_arguments() -> list:
        return list(known)

    all_global_arguments.sdinfra_cached = True
    all_global_arguments.__doc__ = original.__doc__
    arguments.all_global_arguments = all_global_arguments
    if getattr(facts, "all_global_arguments", None) is original:
        facts.all_global_arguments = all_global_arguments


_cache_global_arguments()
