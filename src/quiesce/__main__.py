from quiesce.frontends.cli import main

main()
