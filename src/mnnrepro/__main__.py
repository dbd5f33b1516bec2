from .cli import console, exit_now

exit_now(console())
