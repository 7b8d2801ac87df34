from hificli.cli import main

main()
