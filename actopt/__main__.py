from actopt.cli import main

main()
