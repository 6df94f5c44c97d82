"""One module per CLI sub-command; each defines ``register(subparsers)``.

A command's ``run(args) -> int`` is attached with ``parser.set_defaults(func=run)``
and imports heavy dependencies lazily so ``ecgbridge --help`` stays fast.
"""

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "digitize",
    "convert",
    "evaluate",
    "bench",
    "serve",
    "jobs",
    "batch",
)
