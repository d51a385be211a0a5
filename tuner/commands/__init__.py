"""One module per `python -m tuner` sub-command: HELP, add_arguments(parser), main(args) -> int."""
