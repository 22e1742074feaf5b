from quiesce.cli import main

main()
