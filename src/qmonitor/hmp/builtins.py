"""The human monitor's own commands: ``help`` (alias ``?``) and ``info``.

They are human-only (``qmp=False``), as in QEMU, where they are table entries of
``hmp-commands.hx`` with the same ``params`` and ``help`` texts. ``info`` with a word after it
never reaches its handler: the parser looks the word up in the ``info`` sub-table.

Under a roles policy both list only what the session's role may run (``commands_for``).
"""

from __future__ import annotations

from collections.abc import Callable

from qmonitor.core.commands import Command, CommandRegistry, Context, HumanSyntax
from qmonitor.core.session import Session
from qmonitor.hmp.table import INFO, CommandTable, command_table

HELP_SYNTAX = HumanSyntax(
    name="help", aliases=("?",), args_type="name:S?", params="[cmd]", help="show the help"
)
INFO_SYNTAX = HumanSyntax(
    name=INFO,
    args_type="",
    params="[subcommand]",
    help="show various information about the system state",
)


CommandsFor = Callable[[Session | None], list[Command]]
"""The commands a session may run (``Monitor.commands_for``)."""


def register_hmp_builtins(
    registry: CommandRegistry, commands_for: CommandsFor | None = None
) -> None:
    """Add ``help`` and ``info`` to ``registry`` (once; later calls do nothing).

    With ``commands_for`` they list only the commands it gives for the session that asks.
    """
    if "help" in registry:
        return

    def table_for(ctx: Context) -> CommandTable:
        if commands_for is None:
            return command_table(registry)
        visible = commands_for(ctx.session)
        if len(visible) == len(registry):
            return command_table(registry)
        return CommandTable.from_commands(visible)

    @registry.command(name="help", hmp=HELP_SYNTAX, qmp=False)
    def help_(ctx: Context, name: str | None = None) -> str:
        """List the human monitor's commands, or show one (``help info`` lists info items)."""
        from qmonitor.hmp.render import help_text  # the renderer loads with the first use

        return help_text(table_for(ctx), name)

    @registry.command(name=INFO, hmp=INFO_SYNTAX, qmp=False)
    def info(ctx: Context) -> str:
        """List the ``info`` items (``info ITEM`` runs one)."""
        from qmonitor.hmp.render import help_text

        return help_text(table_for(ctx), INFO)
