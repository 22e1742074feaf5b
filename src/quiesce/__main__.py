from quiesce.main import main

main()
