from actopt.cli import main

main(prog_name="actopt")  # what the messages and --help call the command, however it was started
